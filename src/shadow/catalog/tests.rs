use std::collections::HashSet;

use super::*;

fn builtin() -> Catalog {
    match Catalog::builtin() {
        Ok(catalog) => catalog,
        Err(e) => panic!("the builtin catalog does not load: {e}"),
    }
}

fn id_of<'a>(catalog: &'a Catalog, host: &str) -> Option<&'a str> {
    catalog.match_host(host).map(|e| e.id.as_str())
}

fn spec(yaml: &str) -> Vec<EntrySpec> {
    Catalog::parse_extra("test", yaml).unwrap()
}

fn small() -> Catalog {
    Catalog::from_yaml(
        "test",
        r#"
version: "1"
entries:
  - id: example-chat
    name: Example Chat
    vendor: Example
    category: chat_assistant
    domains: [example.ai, "*.example.ai"]
    source: https://example.ai/about
  - id: example-api
    name: Example API
    vendor: Example
    category: llm_api
    domains: [api.example.ai]
    api_hosts:
      - { host: api.example.ai, api: openai }
    trains_on_inputs: { value: "no", source: https://example.ai/privacy }
    retention: { value: 30 days, source: https://example.ai/privacy }
    source: https://example.ai/docs
  - id: regional
    name: Regional
    vendor: Example
    category: llm_api
    domains: ["runtime.*.cloud.example", "*.deep.example"]
    api_hosts:
      - { host: "*.api.cloud.example", api: anthropic }
    source: https://cloud.example/docs
"#,
    )
    .unwrap()
}

#[test]
fn builtin_catalog_loads_and_has_at_least_150_entries() {
    let catalog = builtin();
    assert!(catalog.len() >= 150, "{} entries", catalog.len());
    assert!(!catalog.version().is_empty());
    for category in Category::ALL {
        if category != Category::Other {
            assert!(catalog.entries().iter().any(|e| e.category == category), "no entry in {category}");
        }
    }
}

#[test]
fn builtin_ids_are_unique_kebab_case_and_resolve() {
    let catalog = builtin();
    let mut seen = HashSet::new();
    for entry in catalog.entries() {
        assert!(seen.insert(entry.id.as_str()), "{} twice", entry.id);
        assert!(is_kebab_id(&entry.id), "{}", entry.id);
        assert_eq!(catalog.get(&entry.id).map(|e| &e.id), Some(&entry.id));
    }
    assert!(catalog.get("no-such-app").is_none());
}

#[test]
fn builtin_entries_have_valid_domains_a_category_and_sources() {
    let catalog = builtin();
    for entry in catalog.entries() {
        assert!(!entry.domains.is_empty(), "{}", entry.id);
        for domain in &entry.domains {
            assert_eq!(check_domain(domain), Ok(()), "{}: {domain}", entry.id);
        }
        assert!(Category::parse(entry.category.as_str()).is_some());
        assert!(entry.source.starts_with("https://"), "{}: {}", entry.id, entry.source);
        assert!(!entry.name.is_empty() && !entry.vendor.is_empty(), "{}", entry.id);
        if entry.trains_on_inputs.value != Trains::Unknown {
            assert!(entry.trains_on_inputs.source.as_deref().is_some_and(|s| s.starts_with("https://")));
        }
        if entry.retention.value.is_some() {
            assert!(entry.retention.source.as_deref().is_some_and(|s| s.starts_with("https://")));
        }
        // An app's own domains lead back to it (a wildcard, filled in).
        for domain in &entry.domains {
            let host = domain.replace('*', "x");
            assert_eq!(id_of(&catalog, &host), Some(entry.id.as_str()), "{domain}");
        }
    }
}

#[test]
fn the_big_apps_are_there_with_their_facts() {
    let catalog = builtin();
    for id in [
        "openai-api",
        "chatgpt",
        "anthropic-api",
        "claude",
        "gemini",
        "gemini-api",
        "github-copilot",
        "huggingface",
        "ollama-registry",
        "lmstudio-hub",
        "microsoft-copilot",
        "cursor",
        "perplexity",
        "midjourney",
        "elevenlabs",
        "otter",
        "grammarly",
    ] {
        assert!(catalog.get(id).is_some(), "{id} missing");
    }
    assert_eq!(catalog.get("openai-api").unwrap().trains_on_inputs.value, Trains::No);
    assert_eq!(catalog.get("chatgpt").unwrap().trains_on_inputs.value, Trains::OptOut);
    assert_eq!(catalog.get("claude").unwrap().category, Category::ChatAssistant);
    assert_eq!(catalog.get("ollama-registry").unwrap().category, Category::ModelHub);
}

#[test]
fn matching_exact_wildcard_subdomain_and_non_match() {
    let catalog = builtin();
    // Exact.
    assert_eq!(id_of(&catalog, "api.openai.com"), Some("openai-api"));
    assert_eq!(id_of(&catalog, "chatgpt.com"), Some("chatgpt"));
    assert_eq!(id_of(&catalog, "claude.ai"), Some("claude"));
    // Wildcards, at any depth, and the exact host beats the wildcard.
    assert_eq!(id_of(&catalog, "cdn.oaistatic.com"), Some("chatgpt"));
    assert_eq!(id_of(&catalog, "a.b.c.chatgpt.com"), Some("chatgpt"));
    assert_eq!(id_of(&catalog, "openai.com"), Some("openai"));
    assert_eq!(id_of(&catalog, "cdn.openai.com"), Some("openai"));
    assert_eq!(id_of(&catalog, "chat.mistral.ai"), Some("le-chat"));
    assert_eq!(id_of(&catalog, "api.mistral.ai"), Some("mistral-api"));
    assert_eq!(id_of(&catalog, "cdn-lfs.huggingface.co"), Some("huggingface"));
    assert_eq!(id_of(&catalog, "router.huggingface.co"), Some("huggingface-inference"));
    assert_eq!(id_of(&catalog, "registry.ollama.ai"), Some("ollama-registry"));
    // One label for `*` inside a name.
    assert_eq!(id_of(&catalog, "bedrock-runtime.eu-west-1.amazonaws.com"), Some("amazon-bedrock"));
    assert_eq!(id_of(&catalog, "myres.openai.azure.com"), Some("azure-openai"));
    // Not AI, or only a suffix of an AI domain.
    for host in [
        "example.com",
        "com",
        "",
        ".",
        "notchatgpt.com",
        "chatgpt.com.evil.example",
        "s3.us-east-1.amazonaws.com",
        "bedrock-runtime.amazonaws.com",
        "openai.azure.com",
        "azure.com",
    ] {
        assert_eq!(id_of(&catalog, host), None, "{host:?}");
    }
}

#[test]
fn matching_ignores_case_and_one_trailing_dot() {
    let catalog = builtin();
    assert_eq!(id_of(&catalog, "API.OpenAI.com"), Some("openai-api"));
    assert_eq!(id_of(&catalog, "api.openai.com."), Some("openai-api"));
    assert_eq!(id_of(&catalog, "Cdn.OaiStatic.COM."), Some("chatgpt"));
    assert_eq!(id_of(&catalog, "api.openai.com.."), None);
}

#[test]
fn wildcard_forms_match_as_documented() {
    let catalog = small();
    assert_eq!(id_of(&catalog, "example.ai"), Some("example-chat"));
    assert_eq!(id_of(&catalog, "www.example.ai"), Some("example-chat"));
    assert_eq!(id_of(&catalog, "api.example.ai"), Some("example-api"));
    assert_eq!(id_of(&catalog, "x.api.example.ai"), Some("example-chat"));
    assert_eq!(id_of(&catalog, "runtime.eu-1.cloud.example"), Some("regional"));
    assert_eq!(id_of(&catalog, "runtime.cloud.example"), None);
    assert_eq!(id_of(&catalog, "runtime.a.b.cloud.example"), None);
    assert_eq!(id_of(&catalog, "other.eu-1.cloud.example"), None);
    // `*.x` is subdomains only.
    assert_eq!(id_of(&catalog, "deep.example"), None);
    assert_eq!(id_of(&catalog, "a.b.deep.example"), Some("regional"));
    let hosts: Vec<(&str, ApiShape)> = catalog.api_hosts().collect();
    assert_eq!(hosts, [("api.example.ai", ApiShape::OpenAi), ("*.api.cloud.example", ApiShape::Anthropic)]);
    // An API host's leading `*` is one label, as in the intercept list.
    assert_eq!(id_of(&catalog, "eu.api.cloud.example"), Some("regional"));
    assert_eq!(id_of(&catalog, "a.eu.api.cloud.example"), None);
    let api = catalog.get("example-api").unwrap();
    assert_eq!(api.retention.value.as_deref(), Some("30 days"));
    assert_eq!(api.trains_on_inputs.value, Trains::No);
    assert_eq!(catalog.get("example-chat").unwrap().trains_on_inputs.value, Trains::Unknown);
}

#[test]
fn every_provider_sluice_intercepts_is_in_the_catalog_with_the_same_shape() {
    let catalog = builtin();
    for provider in crate::wire::providers::CATALOG {
        for host in provider.hosts {
            let found = catalog.entries().iter().flat_map(|e| e.api_hosts.iter().map(move |h| (e, h)));
            let matches: Vec<_> = found.filter(|(_, h)| h.host == *host).collect();
            assert_eq!(matches.len(), 1, "{host} of {} listed {} times", provider.name, matches.len());
            let (entry, api_host) = matches[0];
            assert_eq!(api_host.provider.as_deref(), Some(provider.name), "{host}");
            assert_eq!(api_host.api.family(), Some(provider.api), "{host}");
            // And a concrete host under the pattern names that entry.
            let concrete = host.replace('*', "us-east-1");
            assert_eq!(id_of(&catalog, &concrete), Some(entry.id.as_str()), "{concrete}");
        }
    }
    // Conversely, a host tagged with a provider is one that provider has.
    for entry in catalog.entries() {
        for h in &entry.api_hosts {
            if let Some(name) = &h.provider {
                let provider = crate::wire::providers::by_name(name).unwrap();
                assert!(provider.hosts.contains(&h.host.as_str()), "{} is not a host of {name}", h.host);
            }
        }
    }
}

#[test]
fn api_hosts_make_an_intercept_list_the_ca_accepts() {
    let catalog = builtin();
    let patterns: Vec<String> = catalog.api_hosts().map(|(h, _)| h.to_owned()).collect();
    assert!(patterns.len() >= 50, "{}", patterns.len());
    crate::ca::name_constraint_subtrees(&patterns).unwrap();
}

#[test]
fn validation_names_the_entry_and_the_reason() {
    let base = r#"
version: "1"
entries:
  - id: ID
    name: N
    vendor: V
    category: CATEGORY
    domains: ["DOMAIN"]
    source: SOURCE
"#;
    let case = |id: &str, category: &str, domain: &str, source: &str| {
        let text =
            base.replace("ID", id).replace("CATEGORY", category).replace("DOMAIN", domain).replace("SOURCE", source);
        Catalog::from_yaml("t.yaml", &text).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(case("ok", "llm_api", "ok.example", "https://ok.example"), Ok(()));
    let err = case("Bad_Id", "llm_api", "ok.example", "https://ok.example").unwrap_err();
    assert!(err.contains("t.yaml: entry `Bad_Id`: id must be kebab-case"), "{err}");
    let err = case("x", "chatbot", "ok.example", "https://ok.example").unwrap_err();
    assert!(err.contains("entry `x`: category `chatbot` is not one of"), "{err}");
    let err = case("x", "llm_api", "Upper.Example", "https://ok.example").unwrap_err();
    assert!(err.contains("entry `x`: domain `Upper.Example`: must be lower case"), "{err}");
    for bad in
        ["localhost", "ok..example", "-a.example", "a_b.example", "10.0.0.1", "*.com", "a*.example", "ok.example."]
    {
        let err = case("x", "llm_api", bad, "https://ok.example").unwrap_err();
        assert!(err.contains(&format!("domain `{bad}`")), "{bad}: {err}");
    }
    let err = case("x", "llm_api", "ok.example", "\"\"").unwrap_err();
    assert!(err.contains("entry `x`: `source` must be"), "{err}");
    let err = case("x", "llm_api", "ok.example", "ok.example/about").unwrap_err();
    assert!(err.contains("`source` must be"), "{err}");

    let no_domains = "version: '1'\nentries: [{id: x, name: N, vendor: V, category: other, source: https://a.b}]";
    assert!(Catalog::from_yaml("t", no_domains).unwrap_err().to_string().contains("entry `x`: no domains"));
    let twice = "version: '1'\nentries:\n  - {id: x, name: N, vendor: V, category: other, domains: [a.example], source: https://a.b}\n  - {id: x, name: N, vendor: V, category: other, domains: [b.example], source: https://a.b}";
    assert!(Catalog::from_yaml("t", twice).unwrap_err().to_string().contains("entry `x`: id used twice"));
    let claimed = "version: '1'\nentries:\n  - {id: x, name: N, vendor: V, category: other, domains: [a.example], source: https://a.b}\n  - {id: y, name: N, vendor: V, category: other, domains: [a.example], source: https://a.b}";
    let err = Catalog::from_yaml("t", claimed).unwrap_err().to_string();
    assert!(err.contains("entries `x` and `y` both claim `a.example`"), "{err}");
}

#[test]
fn api_shapes_facts_and_providers_are_checked() {
    let entry = |extra: &str| {
        format!(
            "version: '1'\nentries:\n  - {{id: x, name: N, vendor: V, category: llm_api, domains: [a.example], source: https://a.b, {extra}}}"
        )
    };
    let load = |extra: &str| Catalog::from_yaml("t", &entry(extra)).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(load("api_hosts: [{host: api.a.example, api: openai}]"), Ok(()));
    assert!(load("api_hosts: [{host: api.a.example, api: graphql}]")
        .unwrap_err()
        .contains("api `graphql` is not one of"));
    assert!(load("api_hosts: [{host: 'a.*.b.example', api: openai}]")
        .unwrap_err()
        .contains("api host `a.*.b.example`"));
    assert!(load("api_hosts: [{host: api.a.example, api: openai, provider: acme}]")
        .unwrap_err()
        .contains("provider `acme` is not one of"));
    assert!(load("api_hosts: [{host: api.a.example, api: gemini, provider: openai}]")
        .unwrap_err()
        .contains("does not match provider `openai`"));
    assert_eq!(load("trains_on_inputs: unknown, retention: unknown"), Ok(()));
    assert!(load("trains_on_inputs: 'no'").unwrap_err().contains("needs a `source`"));
    assert!(load("trains_on_inputs: {value: maybe, source: https://a.b}")
        .unwrap_err()
        .contains("`maybe` is not one of"));
    assert!(load("retention: forever").unwrap_err().contains("`retention` needs"));
    assert_eq!(load("trains_on_inputs: {value: opt_out, detail: d, source: https://a.b/p}"), Ok(()));
}

#[test]
fn extra_entries_add_and_override_and_refuse_duplicates() {
    let catalog = builtin();
    let before = catalog.len();
    let org = spec(
        r#"
- id: corp-llm-gateway
  name: Corp LLM gateway
  vendor: Corp
  category: llm_api
  domains: [llm.corp.example]
  api_hosts: [{ host: llm.corp.example, api: openai }]
  source: https://wiki.corp.example/llm
- id: chatgpt
  override: true
  name: ChatGPT Enterprise
  vendor: OpenAI
  category: chat_assistant
  domains: [chatgpt.com, "*.chatgpt.com"]
  trains_on_inputs: { value: "no", source: https://openai.com/enterprise-privacy/ }
  source: https://wiki.corp.example/chatgpt
"#,
    );
    let merged = catalog.with_extra("sluice.yaml catalog", org).unwrap();
    assert_eq!(merged.len(), before + 1);
    assert_eq!(id_of(&merged, "llm.corp.example"), Some("corp-llm-gateway"));
    let chatgpt = merged.get("chatgpt").unwrap();
    assert_eq!(chatgpt.name, "ChatGPT Enterprise");
    assert_eq!(chatgpt.origin, "sluice.yaml catalog");
    assert_eq!(chatgpt.trains_on_inputs.value, Trains::No);
    // The override replaced the entry whole: its old domains are free.
    assert_eq!(id_of(&merged, "oaistatic.com"), None);
    assert_eq!(id_of(&merged, "chatgpt.com"), Some("chatgpt"));
    assert!(merged.api_hosts().any(|(h, s)| h == "llm.corp.example" && s == ApiShape::OpenAi));
    // A team's addition on top of the organisation's: a more specific host
    // than a builtin wildcard is fine.
    let team = spec(
        r#"
entries:
  - id: payments-azure
    name: Payments' Azure OpenAI
    vendor: Microsoft
    category: llm_api
    domains: [payments.openai.azure.com]
    source: https://wiki.corp.example/payments
"#,
    );
    let team = merged.with_extra("policies/payments.yaml", team).unwrap();
    assert_eq!(id_of(&team, "payments.openai.azure.com"), Some("payments-azure"));
    assert_eq!(id_of(&team, "other.openai.azure.com"), Some("azure-openai"));

    let dup =
        spec("- {id: claude, name: N, vendor: V, category: other, domains: [x.example], source: https://x.example}");
    let err = catalog.with_extra("team.yaml", dup).unwrap_err().to_string();
    assert!(err.contains("team.yaml: entry `claude`: id is already in the catalog (from builtin catalog)"), "{err}");
    let ghost = spec(
        "- {id: no-such, override: true, name: N, vendor: V, category: other, domains: [x.example], source: https://x.example}",
    );
    let err = catalog.with_extra("team.yaml", ghost).unwrap_err().to_string();
    assert!(err.contains("entry `no-such`: `override: true` but the catalog has no such id"), "{err}");
    let claimed =
        spec("- {id: mine, name: N, vendor: V, category: other, domains: [claude.ai], source: https://x.example}");
    let err = catalog.with_extra("team.yaml", claimed).unwrap_err().to_string();
    assert!(err.contains("entries `claude` and `mine` both claim `claude.ai`"), "{err}");
    assert!(Catalog::parse_extra("t", "").unwrap().is_empty());
    let err = Catalog::parse_extra("t.yaml", "- {id: x, colour: red}").unwrap_err().to_string();
    assert!(err.contains("t.yaml") && err.contains("colour"), "{err}");
}

/// `cargo test --release --lib shadow:: -- --ignored --nocapture` prints
/// the cost of one lookup; it runs on every proxied connection.
#[test]
#[ignore]
fn lookup_cost() {
    let catalog = builtin();
    let hosts = [
        "api.openai.com",
        "cdn.oaistatic.com",
        "www.example.com",
        "a.b.c.d.example.org",
        "bedrock-runtime.us-east-1.amazonaws.com",
        "Mixed.Case.Example.COM",
    ];
    let rounds = 200_000;
    let start = std::time::Instant::now();
    let mut found = 0;
    for _ in 0..rounds {
        for host in hosts {
            found += usize::from(catalog.match_host(std::hint::black_box(host)).is_some());
        }
    }
    let per = start.elapsed().as_nanos() as f64 / (rounds * hosts.len()) as f64;
    println!("{per:.0} ns per lookup ({found} matches)");
}

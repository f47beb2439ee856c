//! `provider:` conditions against the provider catalog: a policy may name
//! every provider the proxy intercepts (it once knew only openai and
//! anthropic), and a misspelt name is refused with the list of valid ones.
//! Driven through the public API: a policy directory on disk, loaded with
//! [`PolicySet::load_dir`], deciding on [`Signals`].

use std::fs;
use std::sync::Arc;

use super::{Action, PolicyErrors, PolicySet, Signals, TeamPolicy};
use crate::wire::providers;

/// Load a policy directory holding a plain `default.yaml` and `team` as `t.yaml`.
fn load(team: &str) -> Result<PolicySet, PolicyErrors> {
    let dir = tempfile::tempdir().expect("a temp dir can be created in tests");
    fs::write(dir.path().join("default.yaml"), "default: cloud\n").expect("writable temp dir");
    fs::write(dir.path().join("t.yaml"), team).expect("writable temp dir");
    PolicySet::load_dir(dir.path())
}

fn team(yaml: &str) -> Arc<TeamPolicy> {
    match load(yaml) {
        Ok(set) => Arc::clone(set.team("t").expect("t.yaml was loaded")),
        Err(e) => panic!("policy should load:\n{e}"),
    }
}

/// The action and rule for a request addressed to `provider`.
fn decide(policy: &TeamPolicy, provider: &str) -> (Action, String) {
    let decision =
        policy.decide(&Signals { requested_model: "some-model", provider, prompt_tokens: 10, ..Signals::default() });
    (decision.action, decision.rule)
}

const NON_OPENAI_LOCAL: &str = "\
rules:
  - name: non-openai-local
    when: { provider: [gemini, bedrock, mistral, azure_openai] }
    then: local
default: cloud
";

#[test]
fn policy_can_name_providers_beyond_openai_and_anthropic() {
    let policy = team(NON_OPENAI_LOCAL);
    for provider in ["gemini", "bedrock", "mistral", "azure_openai"] {
        assert_eq!(decide(&policy, provider), (Action::Local, "non-openai-local".to_string()), "{provider}");
    }
    // Names are matched without regard to ASCII case, as before.
    assert_eq!(decide(&policy, "Gemini").0, Action::Local);
    for provider in ["openai", "anthropic", "groq", "example.com", ""] {
        assert_eq!(decide(&policy, provider), (Action::Cloud, "default".to_string()), "{provider}");
    }
}

#[test]
fn provider_conditions_match_the_names_the_proxy_gives_hosts() {
    // At the proxy, the provider a policy sees is the catalog's name for
    // the origin host.
    let policy = team(NON_OPENAI_LOCAL);
    for host in [
        "generativelanguage.googleapis.com",
        "bedrock-runtime.us-east-1.amazonaws.com",
        "api.mistral.ai",
        "myco.openai.azure.com",
    ] {
        let provider = providers::provider_of_host(host);
        assert_eq!(decide(&policy, provider).0, Action::Local, "{host} -> {provider}");
    }
    for host in ["api.openai.com", "api.groq.com", "example.com"] {
        let provider = providers::provider_of_host(host);
        assert_eq!(decide(&policy, provider).0, Action::Cloud, "{host} -> {provider}");
    }
}

#[test]
fn every_catalog_name_is_a_valid_provider_condition() {
    let names: Vec<&str> = providers::names().collect();
    let policy = team(&format!(
        "rules:\n  - {{ name: all, when: {{ provider: [{}] }}, then: block }}\ndefault: cloud\n",
        names.join(", ")
    ));
    for name in names {
        assert_eq!(decide(&policy, name).0, Action::Block, "{name}");
    }
    assert_eq!(decide(&policy, "example.com").0, Action::Cloud);
}

#[test]
fn unknown_provider_is_refused_with_the_valid_names() {
    let err = match load("default: cloud\nrules:\n- name: r\n  when: { provider: [gemini, gemeni] }\n  then: block\n") {
        Ok(_) => panic!("a misspelt provider must not load"),
        Err(err) => err,
    };
    assert_eq!(err.0.len(), 1, "{err}");
    let error = &err.0[0];
    assert_eq!(error.line, Some(4), "{err}");
    assert!(error.reason.contains("unknown provider `gemeni`"), "{err}");
    let valid = error
        .reason
        .split_once("valid: ")
        .map(|(_, list)| list)
        .unwrap_or_else(|| panic!("the valid names are listed: {err}"));
    let valid: Vec<&str> = valid.split(", ").map(str::trim).collect();
    assert_eq!(valid, providers::names().collect::<Vec<_>>(), "{err}");
}

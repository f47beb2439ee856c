use super::*;
use std::fs;
use std::path::Path;

fn finding(category: Category, kind: &'static str) -> Finding {
    Finding { category, kind, segment: 0, span: 0..1, confidence: 1.0, validator: "test" }
}

fn pii(kind: &'static str) -> Finding {
    finding(Category::Pii, kind)
}

fn secret(kind: &'static str) -> Finding {
    finding(Category::Secret, kind)
}

fn term() -> Finding {
    finding(Category::Term, crate::inspect::TERM_KIND)
}

fn signals<'a>(findings: &'a [Finding], model: &'a str, provider: &'a str, tokens: u64) -> Signals<'a> {
    Signals { findings, requested_model: model, provider, prompt_tokens: tokens, ..Signals::default() }
}

/// A policy directory holding `files`, plus a trivial default.yaml unless given.
fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir can be created in tests");
    if !files.iter().any(|(name, _)| *name == "default.yaml") {
        fs::write(dir.path().join("default.yaml"), "default: cloud\n").expect("writable temp dir");
    }
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("writable temp dir");
    }
    dir
}

/// Load a single team file `t.yaml` that must be valid.
fn team(yaml: &str) -> Arc<TeamPolicy> {
    let dir = policy_dir(&[("t.yaml", yaml)]);
    match PolicySet::load_dir(dir.path()) {
        Ok(set) => Arc::clone(set.team("t").expect("t.yaml was loaded")),
        Err(e) => panic!("policy should load:\n{e}"),
    }
}

fn errors(files: &[(&str, &str)]) -> Vec<PolicyError> {
    let dir = policy_dir(files);
    match PolicySet::load_dir(dir.path()) {
        Ok(_) => panic!("policy should have been rejected"),
        Err(PolicyErrors(errors)) => errors,
    }
}

/// The single error for `t.yaml`, as (line, reason).
fn one_error(yaml: &str) -> (Option<usize>, String) {
    let errs = errors(&[("t.yaml", yaml)]);
    assert_eq!(errs.len(), 1, "expected one error, got: {errs:?}");
    assert!(errs[0].file.ends_with("t.yaml"), "{:?}", errs[0].file);
    (errs[0].line, errs[0].reason.clone())
}

fn attachment() -> Finding {
    finding(Category::Attachment, crate::inspect::ATTACHMENT_KIND)
}

fn with_confidence(mut f: Finding, confidence: f32) -> Finding {
    f.confidence = confidence;
    f
}

fn task(name: &str, confidence: f32) -> Option<crate::classify::Prediction> {
    Some(crate::classify::Prediction { task: Task::from_name(name).expect("test names a real task"), confidence })
}

fn shipped() -> PolicySet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    match PolicySet::load_dir(&dir) {
        Ok(set) => set,
        Err(e) => panic!("shipped policies must load:\n{e}"),
    }
}

#[test]
fn shipped_policies_load_cleanly_and_behave_as_documented() {
    let set = shipped();
    assert_eq!(set.teams().collect::<Vec<_>>(), ["default", "engineering", "payments"]);
    assert_eq!(set.len(), 3);

    let default = set.team("default").expect("default.yaml ships");
    assert!(default.dictionary_terms().is_empty());
    assert!(default.sticky_local());
    let decide = |f: &[Finding]| default.decide(&signals(f, "gpt-4o", "openai", 10));
    let d = decide(&[pii("email"), secret("aws_access_key")]);
    assert_eq!((d.action, d.rule.as_str()), (Action::Block, "org:no-secrets"));
    assert_eq!(&*d.decided_by, "org.yaml#no-secrets");
    // Documentation keys score 0.6 and are still blocked.
    let d = decide(&[with_confidence(secret("aws_access_key"), 0.6)]);
    assert_eq!(d.action, Action::Block);
    for kind in ["credit_card", "us_ssn", "iban", "uk_nino", "us_bank_routing"] {
        let d = decide(&[pii(kind)]);
        assert_eq!(d.action, Action::Local, "{kind}");
        assert!(d.sticky, "{kind}");
    }
    assert_eq!(decide(&[term()]).action, Action::Local);
    for kind in ["email", "phone", "date_of_birth"] {
        let d = decide(&[pii(kind)]);
        assert_eq!((d.action, d.rule.as_str()), (Action::Redact, "other-pii-redacted"), "{kind}");
    }
    // A card next to an email stays home rather than being redacted.
    assert_eq!(decide(&[pii("email"), pii("credit_card")]).action, Action::Local);
    // Loopback addresses (0.4) are not personal data here.
    assert_eq!(decide(&[with_confidence(pii("ip_address"), 0.4)]).rule, "default");
    assert_eq!(decide(&[attachment()]).rule, "attachments-to-cloud");
    assert_eq!(decide(&[]).rule, "default");
    // A place, company or nationality alone changes nothing ("what is the
    // capital of France?"); beside a name it is redacted with the name.
    for kind in ["location", "organization", "nationality"] {
        assert_eq!(decide(&[entity(kind)]).rule, "default", "{kind}");
    }
    let d = decide(&[pii("person"), entity("location")]);
    assert_eq!((d.action, d.rule.as_str()), (Action::Redact, "other-pii-redacted"));
    assert!(default.findings_to_redact(&d, &[pii("person"), entity("location")]).len() == 2, "{d:?}");

    let routed = |s: Signals| {
        let d = default.decide(&s);
        (d.action, d.rule)
    };
    let base = || signals(&[], "gpt-4o", "openai", 100);
    let code = Signals { task: task("code_completion", 0.9), ..base() };
    assert_eq!(routed(code.clone()), (Action::Local, "simple-tasks-stay-local".to_string()));
    let unsure = Signals { task: task("code_completion", 0.5), ..base() };
    assert_eq!(routed(unsure).1, "default");
    let busy = Signals { local_queue_depth: 8, ..code.clone() };
    assert_eq!(routed(busy).1, "default");
    let long = Signals { prompt_tokens: 6001, ..code.clone() };
    assert_eq!(routed(long), (Action::Cloud, "long-prompts-to-cloud".to_string()));
    let agent = Signals { tool_steps: 5, ..code.clone() };
    assert_eq!(routed(agent).1, "agent-loops-to-cloud");
    let math = Signals { task: task("math_reasoning", 0.8), ..base() };
    assert_eq!(routed(math).1, "hard-tasks-to-cloud");
    let guess = Signals { task: task("research_analysis", 0.4), ..base() };
    assert_eq!(routed(guess).1, "default");
    // Sensitive rules come first: a long card prompt stays local.
    let cards = [pii("credit_card")];
    let long_card = Signals { findings: &cards, prompt_tokens: 9000, tool_steps: 9, ..base() };
    assert_eq!(routed(long_card).0, Action::Local);
    let sticky = Signals { sticky_local: true, ..base() };
    assert_eq!(routed(sticky), (Action::Local, "sticky_local".to_string()));

    let payments = set.team("payments").expect("payments.yaml ships");
    assert_eq!(payments.team(), "payments");
    assert!(payments.dictionary_terms().iter().any(|t| t == "Project Falcon"));
    assert_eq!(payments.local_options().too_long, TooLong::Block);
    let decide = |f: &[Finding], model: &str, tokens: u64| payments.decide(&signals(f, model, "openai", tokens));
    assert_eq!(decide(&[pii("email")], "gpt-4o", 10).action, Action::Local);
    assert_eq!(decide(&[with_confidence(pii("ip_address"), 0.4)], "gpt-4o", 10).action, Action::Local);
    assert_eq!(decide(&[secret("github_token")], "gpt-4o", 10).action, Action::Block);
    assert_eq!(decide(&[attachment()], "gpt-4o", 10).action, Action::Block);
    assert_eq!(decide(&[], "gpt-4o", 9000).rule, "bulk-prompts-stay-local");
    // Its profile's rules come before its own, named after the profile.
    let d = decide(&[pii("email")], "gpt-4o", 9000);
    assert_eq!(
        (d.rule.as_str(), &*d.decided_by),
        ("regulated:any-pii-stays-local", "profiles/regulated.yaml#any-pii-stays-local")
    );
    assert_eq!(&*decide(&[], "gpt-4o", 10).decided_by, "profiles/regulated.yaml#default");
    assert!(payments.sticky_local(), "from the profile");
    assert_eq!(decide(&[], "gpt-4o", 8000).action, Action::Cloud);
    assert_eq!(decide(&[], "gpt-3.5-turbo", 9000).action, Action::Cloud);

    let eng = set.team("engineering").expect("engineering.yaml ships");
    assert!(!eng.sticky_local());
    let findings = [pii("email"), pii("ip_address"), with_confidence(pii("phone"), 0.65)];
    let d = eng.decide(&signals(&findings, "gpt-4o", "openai", 10));
    assert_eq!((d.action, d.rule.as_str()), (Action::Redact, "personal-data-redacted"));
    let kinds: Vec<&str> = eng.findings_to_redact(&d, &findings).iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["email"], "IP kept, weak phone ignored");
    // The team ignores findings under 0.7, but org.yaml counts every secret.
    let weak_key = [with_confidence(secret("generic_secret"), 0.3)];
    let d = eng.decide(&signals(&weak_key, "gpt-4o", "openai", 10));
    assert_eq!((d.action, d.rule.as_str()), (Action::Block, "org:no-secrets"));
    // Monitor-mode rules record and let evaluation go on.
    let d = eng.decide(&signals(&[], "gpt-4o", "openai", 60_000));
    assert_eq!((d.action, d.rule.as_str()), (Action::Cloud, "default"));
    assert_eq!(d.monitor, [MonitorMatch { rule: "huge-pastes".into(), action: Action::Block }]);
    let d = eng.decide(&signals(&[], "deepseek-chat", "deepseek", 10));
    assert_eq!(d.monitor, [MonitorMatch { rule: "org:unapproved-providers".into(), action: Action::Block }]);
    assert_eq!(d.action, Action::Cloud);
    let completion =
        Signals { task: task("code_completion", 0.7), stream: true, ..signals(&[], "gpt-4o", "openai", 50) };
    assert_eq!(eng.decide(&completion).rule, "editor-completions-local");
    let with_tools = Signals { tools_present: true, ..completion.clone() };
    assert_eq!(eng.decide(&with_tools).rule, "default");
    let pricey = Signals { estimated_cost_usd: Some(2.5), ..completion };
    assert_eq!(eng.decide(&pricey).rule, "expensive-calls");
}

#[test]
fn first_matching_rule_wins_in_file_order() {
    let p = team(
        "rules:\n\
         - { name: first, when: { pii: [email] }, then: local }\n\
         - { name: second, when: { pii: any }, then: block }\n\
         - { name: third, when: { pii: [email] }, then: block }\n\
         default: cloud\n",
    );
    let d = p.decide(&signals(&[pii("email")], "m", "openai", 1));
    assert_eq!((d.action, d.rule.as_str()), (Action::Local, "first"));
    let d = p.decide(&signals(&[pii("phone")], "m", "openai", 1));
    assert_eq!((d.action, d.rule.as_str()), (Action::Block, "second"));
}

#[test]
fn no_match_falls_back_to_default() {
    let p = team("rules:\n- { name: r, when: { terms: any }, then: cloud }\ndefault: block\n");
    let d = p.decide(&signals(&[pii("email")], "m", "openai", 1));
    assert_eq!(
        d,
        Decision {
            action: Action::Block,
            rule: "default".to_string(),
            decided_by: Arc::from("t.yaml#default"),
            reason: "no rule matched".to_string(),
            because: Vec::new(),
            redact: None,
            sticky: false,
            monitor: Vec::new(),
        }
    );
}

#[test]
fn pii_and_secret_lists_match_only_named_kinds_of_their_category() {
    let p = team(
        "rules:\n\
         - { name: keys, when: { secrets: [aws_access_key, private_key] }, then: block }\n\
         - { name: cards, when: { pii: [credit_card, us_ssn] }, then: local }\n\
         default: cloud\n",
    );
    let action = |f: &[Finding]| p.decide(&signals(f, "m", "openai", 1)).action;
    assert_eq!(action(&[secret("private_key")]), Action::Block);
    assert_eq!(action(&[secret("github_token")]), Action::Cloud);
    assert_eq!(action(&[pii("us_ssn")]), Action::Local);
    assert_eq!(action(&[pii("email")]), Action::Cloud);
    // A term is not PII even if a detector gave it a PII-like kind name.
    assert_eq!(action(&[finding(Category::Term, "credit_card")]), Action::Cloud);
    assert_eq!(action(&[pii("email"), pii("credit_card")]), Action::Local);
}

#[test]
fn any_matches_any_finding_of_the_category() {
    let p = team(
        "rules:\n\
         - { name: s, when: { secrets: any }, then: block }\n\
         - { name: p, when: { pii: any }, then: local }\n\
         - { name: t, when: { terms: any }, then: local }\n\
         default: cloud\n",
    );
    let rule = |f: &[Finding]| p.decide(&signals(f, "m", "openai", 1)).rule;
    assert_eq!(rule(&[secret("openai_key")]), "s");
    assert_eq!(rule(&[pii("phone")]), "p");
    assert_eq!(rule(&[term()]), "t");
    assert_eq!(rule(&[]), "default");
}

#[test]
fn model_globs_and_providers_are_lists_of_alternatives() {
    let p = team(
        "rules:\n\
         - { name: big, when: { model: [\"gpt-4*\", \"o1?\"] }, then: local }\n\
         - { name: anth, when: { provider: [anthropic] }, then: block }\n\
         default: cloud\n",
    );
    let rule = |model: &str, provider: &str| p.decide(&signals(&[], model, provider, 1)).rule;
    assert_eq!(rule("gpt-4o-mini", "openai"), "big");
    assert_eq!(rule("o1x", "openai"), "big");
    assert_eq!(rule("o1-mini", "openai"), "default");
    assert_eq!(rule("gpt-3.5-turbo", "openai"), "default");
    assert_eq!(rule("claude-3-haiku", "anthropic"), "anth");
    assert_eq!(rule("claude-3-haiku", "gemini"), "default");
}

#[test]
fn single_names_may_be_written_without_a_list() {
    let p = team(
        "rules:\n- { name: r, when: { pii: iban, model: \"o1*\", provider: openai }, then: local }\ndefault: cloud\n",
    );
    assert_eq!(p.decide(&signals(&[pii("iban")], "o1", "openai", 1)).rule, "r");
}

#[test]
fn exact_tokens_are_needed_only_where_a_range_boundary_falls_inside_the_bounds() {
    let policy = team(
        "rules:\n\
         - { name: big, when: { prompt_tokens: { gt: 6000 } }, then: cloud }\n\
         default: local\n",
    );
    assert!(!policy.needs_exact_tokens(0));
    assert!(!policy.needs_exact_tokens(6000), "6000 is not > 6000");
    assert!(policy.needs_exact_tokens(6001));
    let band = team(
        "rules:\n\
         - { name: band, when: { prompt_tokens: { gte: 10, lte: 20 } }, then: local }\n\
         default: cloud\n",
    );
    assert!(!band.needs_exact_tokens(9));
    assert!(band.needs_exact_tokens(10));
    assert!(band.needs_exact_tokens(1_000), "the band lies inside 0..=1000");
    let small = team(
        "rules:\n\
         - { name: small, when: { prompt_tokens: { lt: 50 } }, then: local }\n\
         default: cloud\n",
    );
    assert!(!small.needs_exact_tokens(49), "every count up to 49 is < 50");
    assert!(small.needs_exact_tokens(50));
    let cost = team(
        "rules:\n\
         - { name: dear, when: { estimated_cost_usd: { gt: 1 } }, then: local }\n\
         default: cloud\n",
    );
    assert!(cost.needs_exact_tokens(0), "cost follows the count");
    let none = team("rules:\n- { name: cards, when: { pii: [credit_card] }, then: block }\ndefault: cloud\n");
    assert!(!none.needs_exact_tokens(1_000_000));
}

#[test]
fn prompt_token_comparisons_have_exact_boundaries() {
    let p = team(
        "rules:\n\
         - { name: gt, when: { prompt_tokens: { gt: 100 } }, then: block }\n\
         - { name: band, when: { prompt_tokens: { gte: 10, lte: 20 } }, then: local }\n\
         - { name: lt, when: { prompt_tokens: { lt: 5 } }, then: local }\n\
         default: cloud\n",
    );
    let rule = |n: u64| p.decide(&signals(&[], "m", "openai", n)).rule;
    assert_eq!(rule(101), "gt");
    assert_eq!(rule(100), "default");
    assert_eq!(rule(20), "band");
    assert_eq!(rule(10), "band");
    assert_eq!(rule(21), "default");
    assert_eq!(rule(9), "default");
    assert_eq!(rule(4), "lt");
    assert_eq!(rule(5), "default");
}

#[test]
fn all_conditions_of_a_rule_must_hold() {
    let p = team(
        "rules:\n\
         - name: all\n  \
           when:\n    \
             pii: [email]\n    \
             model: [\"gpt-4*\"]\n    \
             provider: [openai]\n    \
             prompt_tokens: { gte: 1000 }\n  \
           then: local\n\
         default: cloud\n",
    );
    let rule = |f: &[Finding], model: &str, provider: &str, n: u64| p.decide(&signals(f, model, provider, n)).rule;
    let email = [pii("email")];
    assert_eq!(rule(&email, "gpt-4o", "openai", 1000), "all");
    assert_eq!(rule(&[], "gpt-4o", "openai", 1000), "default");
    assert_eq!(rule(&email, "gpt-3.5", "openai", 1000), "default");
    assert_eq!(rule(&email, "gpt-4o", "anthropic", 1000), "default");
    assert_eq!(rule(&email, "gpt-4o", "openai", 999), "default");
}

#[test]
fn reasons_name_the_triggering_types_or_use_the_given_text() {
    let p = team(
        "rules:\n\
         - { name: keys, when: { secrets: any }, then: block, reason: \"No credentials\" }\n\
         - { name: cards, when: { pii: [credit_card, us_ssn, iban], terms: any }, then: local }\n\
         - { name: big, when: { model: \"gpt-4*\", provider: openai, prompt_tokens: { gt: 5 } }, then: local }\n\
         default: cloud\n",
    );
    let reason = |f: &[Finding], n: u64| p.decide(&signals(f, "gpt-4o", "openai", n)).reason;
    assert_eq!(reason(&[secret("private_key")], 1), "No credentials");
    assert_eq!(
        reason(&[pii("us_ssn"), pii("email"), term(), pii("credit_card"), pii("us_ssn")], 1),
        "rule cards matched: pii: credit_card, us_ssn; terms: dictionary match"
    );
    assert_eq!(reason(&[], 9), "rule big matched: model: gpt-4o; provider: openai; prompt_tokens: 9 > 5");
}

#[test]
fn dictionary_combines_inline_and_file_terms_trimmed_and_deduplicated() {
    let dir = policy_dir(&[
        (
            "pay.yaml",
            "dictionary:\n  terms: [\" Project Falcon \", \"ACME Bank\"]\n  file: pay-terms.txt\ndefault: cloud\n",
        ),
        ("pay-terms.txt", "# code names\n\nACME Bank\n  Ledgerline  \nC# Tools\n"),
    ]);
    let set = PolicySet::load_dir(dir.path()).map_err(|e| e.to_string());
    let set = set.as_ref().map_err(String::as_str);
    let terms = set.map(|s| s.team("pay").map(|p| p.dictionary_terms().to_vec()));
    assert_eq!(
        terms,
        Ok(Some(vec![
            "Project Falcon".to_string(),
            "ACME Bank".to_string(),
            "Ledgerline".to_string(),
            "C# Tools".to_string()
        ]))
    );
}

#[test]
fn unknown_pii_name_is_reported_at_the_name_with_valid_names() {
    let (line, reason) = one_error(
        "rules:\n\
         - name: r\n  \
           when:\n    \
             pii:\n      \
               - email\n      \
               - passport\n  \
           then: local\n\
         default: cloud\n",
    );
    assert_eq!(line, Some(6));
    assert!(reason.contains("unknown pii type `passport`"), "{reason}");
    assert!(reason.contains("email, credit_card, us_ssn, phone, iban"), "{reason}");
}

#[test]
fn unknown_secret_name_and_provider_are_rejected() {
    let (line, reason) =
        one_error("rules:\n- name: r\n  when: { secrets: [aws_key] }\n  then: block\ndefault: cloud\n");
    assert_eq!(line, Some(3));
    assert!(reason.contains("unknown secret type `aws_key`"), "{reason}");
    let (line, reason) =
        one_error("default: cloud\nrules:\n- name: r\n  when: { provider: [gemeni] }\n  then: block\n");
    assert_eq!(line, Some(4));
    assert!(reason.contains("openai, anthropic"), "{reason}");
}

#[test]
fn unknown_action_is_reported_at_its_line() {
    let (line, reason) = one_error(
        "rules:\n\
         - name: r\n  \
           when: { pii: any }\n  \
           then: allow\n\
         default: cloud\n",
    );
    assert_eq!(line, Some(4));
    assert!(reason.contains("unknown action `allow`; expected local, cloud, redact or block"), "{reason}");
    let (line, _) = one_error("rules: []\ndefault: pass\n");
    assert_eq!(line, Some(2));
}

#[test]
fn unknown_field_is_reported_at_its_line() {
    let (line, reason) = one_error(
        "rules:\n\
         - name: r\n  \
           when:\n    \
             pii: any\n    \
             pi: any\n  \
           then: local\n\
         default: cloud\n",
    );
    assert_eq!(line, Some(5));
    assert!(reason.contains("unknown field `pi`"), "{reason}");
    let (line, reason) = one_error("default: cloud\ndefualt: block\n");
    assert_eq!(line, Some(2));
    assert!(reason.contains("unknown field `defualt`"), "{reason}");
}

#[test]
fn duplicate_rule_name_is_reported_at_the_second_use() {
    let errs = errors(&[(
        "t.yaml",
        "rules:\n\
         - name: same\n  \
           when: { pii: any }\n  \
           then: local\n\
         - name: other\n  \
           when: { terms: any }\n  \
           then: local\n\
         - name: \"same\"\n  \
           when: { secrets: any }\n  \
           then: block\n\
         default: cloud\n",
    )]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (Some(8), Some(3)));
    assert_eq!(errs[0].reason, "duplicate rule name `same` (first on line 2)");
}

#[test]
fn missing_default_is_an_error() {
    let (line, reason) = one_error("# no default here\nrules:\n- { name: r, when: { pii: any }, then: local }\n");
    assert_eq!(line, Some(2));
    assert!(reason.contains("missing field `default`"), "{reason}");
}

#[test]
fn bad_yaml_syntax_is_reported_at_its_line() {
    let (line, _) = one_error("rules:\n- name: r\n  when: { pii: [email }\n  then: local\ndefault: cloud\n");
    assert_eq!(line, Some(3));
    let errs = errors(&[("t.yaml", "default: cloud\nrules: oops: x\n")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, Some(2));
}

#[test]
fn missing_dictionary_file_is_reported_at_the_file_key() {
    let (line, reason) = one_error("dictionary:\n  terms: [a]\n  file: nope.txt\ndefault: local\n");
    assert_eq!(line, Some(3));
    assert!(reason.starts_with("cannot read dictionary file `nope.txt`"), "{reason}");
}

#[test]
fn empty_or_missing_when_is_rejected() {
    let (line, reason) = one_error("default: cloud\nrules:\n- name: r\n  when: {}\n  then: local\n");
    assert_eq!(line, Some(4));
    assert!(reason.contains("empty `when`"), "{reason}");
    let (line, reason) = one_error("default: cloud\nrules:\n- name: r\n  then: local\n");
    assert_eq!(line, Some(3));
    assert!(reason.contains("has no `when`"), "{reason}");
}

#[test]
fn malformed_values_are_rejected_where_they_are() {
    let cases = [
        ("when: { terms: some }", "accepts only `any`"),
        ("when: { model: [\"gpt-[45]\"] }", "only the wildcards"),
        ("when: { pii: [] }", "never matches"),
        ("when: { pii: [any] }", "`any` cannot be part of a list"),
        ("when: { provider: any }", "not allowed"),
        ("when: { prompt_tokens: {} }", "at least one of"),
        ("when: { prompt_tokens: { gt: 10, lt: 5 } }", "can never all hold"),
        ("when: { prompt_tokens: { above: 10 } }", "unknown field `above`"),
        ("when: { prompt_tokens: { gt: -1 } }", "-1"),
    ];
    for (when, expected) in cases {
        let (line, reason) = one_error(&format!("default: cloud\nrules:\n- name: r\n  {when}\n  then: local\n"));
        assert_eq!(line, Some(4), "{when}: {reason}");
        assert!(reason.contains(expected), "{when}: {reason}");
    }
    for name in ["default", "sticky_local"] {
        let (line, reason) =
            one_error(&format!("default: cloud\nrules:\n- name: {name}\n  when: {{ pii: any }}\n  then: local\n"));
        assert_eq!(line, Some(3));
        assert!(reason.contains("reserved"), "{reason}");
    }
}

#[test]
fn errors_from_several_files_are_all_reported() {
    let errs = errors(&[
        ("alpha.yaml", "rules:\n- name: r\n  when: { pii: [mail] }\n  then: local\ndefault: cloud\n"),
        ("beta.yaml", "description: beta\nrules: []\ndefault: nowhere\n"),
        ("Bad Name.yaml", "default: cloud\n"),
        ("notes.txt", "not a policy: ignored\n"),
    ]);
    let summary: Vec<(String, Option<usize>)> = errs
        .iter()
        .map(|e| (e.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), e.line))
        .collect();
    assert_eq!(
        summary,
        [("Bad Name.yaml".to_string(), None), ("alpha.yaml".to_string(), Some(3)), ("beta.yaml".to_string(), Some(3)),]
    );
}

#[test]
fn directory_without_default_or_without_policies_is_an_error() {
    let dir = tempfile::tempdir().expect("a temp dir can be created in tests");
    let err = PolicySet::load_dir(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("no policy files"), "{err}");

    fs::write(dir.path().join("ops.yaml"), "default: local\n").expect("writable temp dir");
    let errs = PolicySet::load_dir(dir.path()).err().map(|e| e.0).unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].file.ends_with("default.yaml"));
    assert_eq!(errs[0].line, None);
}

#[test]
fn key_search_finds_keys_not_text_inside_values() {
    let source = "description: \"see file: x\"\n\
                  # name: a\n\
                  rules:\n\
                  - name: a\n\
                  - { when: { pii: any }, name: 'a' }\n\
                  -   name: ab\n\
                  dictionary: { terms: [x], file: t.txt }\n";
    assert_eq!(find_key_lines(source, "name", Some("a")), [(4, 3), (5, 25)]);
    assert_eq!(find_key_lines(source, "file", None), [(7, 27)]);
}

#[test]
fn errors_display_as_file_line_column_reason() {
    let located = PolicyError {
        file: PathBuf::from("policies/t.yaml"),
        line: Some(4),
        column: Some(9),
        reason: "bad".to_string(),
    };
    let unlocated =
        PolicyError { file: PathBuf::from("policies"), line: None, column: None, reason: "empty".to_string() };
    assert_eq!(located.to_string(), "policies/t.yaml:4:9: bad");
    assert_eq!(unlocated.to_string(), "policies: empty");
    assert_eq!(PolicyErrors(vec![located, unlocated]).to_string(), "policies/t.yaml:4:9: bad\npolicies: empty");
    // serde_yaml's own " at line L column C" is not repeated in the reason.
    let (_, reason) = one_error("default: maybe\n");
    assert!(!reason.contains("at line"), "{reason}");
}

#[test]
fn local_options_parse_default_and_reject_unknown_values_with_lines() {
    assert_eq!(team("default: cloud\n").local_options(), LocalOptions::default());
    let t = team("default: local\nlocal:\n  overflow: cloud\n  overflow_wait_ms: 50\n  too_long: block\n");
    assert_eq!(
        t.local_options(),
        LocalOptions { overflow: Overflow::Cloud, overflow_wait_ms: 50, too_long: TooLong::Block }
    );
    let (line, reason) = one_error("default: local\nlocal:\n  overflow: spill\n");
    assert_eq!(line, Some(3), "{reason}");
    assert!(reason.contains("spill"), "{reason}");
    let (line, reason) = one_error("default: local\nlocal:\n  too_long: reject\n  queue: 3\n");
    assert_eq!(line, Some(4), "{reason}");
    assert!(reason.contains("unknown field `queue`"), "{reason}");
}

/// Signals with only the routing fields that matter to a test set.
fn routing(f: impl FnOnce(&mut Signals<'static>)) -> Signals<'static> {
    let mut s = Signals { requested_model: "gpt-4o", provider: "openai", ..Signals::default() };
    f(&mut s);
    s
}

#[test]
fn attachments_condition_matches_presence_or_absence() {
    let p = team(
        "rules:\n\
         - { name: with, when: { attachments: true }, then: block }\n\
         - { name: without, when: { attachments: false, pii: any }, then: local }\n\
         default: cloud\n",
    );
    let rule = |f: &[Finding]| p.decide(&signals(f, "m", "openai", 1)).rule;
    assert_eq!(rule(&[attachment()]), "with");
    assert_eq!(rule(&[attachment(), pii("email")]), "with");
    assert_eq!(rule(&[pii("email")]), "without");
    assert_eq!(rule(&[]), "default");
    // An attachment is not PII.
    let p = team("rules:\n- { name: r, when: { pii: any }, then: local }\ndefault: cloud\n");
    assert_eq!(p.decide(&signals(&[attachment()], "m", "openai", 1)).rule, "default");
    let d = team("rules:\n- { name: a, when: { attachments: true }, then: cloud }\ndefault: local\n").decide(&signals(
        &[attachment()],
        "m",
        "openai",
        1,
    ));
    assert_eq!(d.because, ["attachments: true"]);
}

#[test]
fn min_confidence_ignores_weak_findings_by_type_then_category_then_default() {
    let p = team(
        "min_confidence:\n  default: 0.5\n  pii: 0.8\n  email: 0.3\n  secrets: 0\n\
         rules:\n\
         - { name: keys, when: { secrets: any }, then: block }\n\
         - { name: people, when: { pii: any }, then: local }\n\
         - { name: words, when: { terms: any }, then: local }\n\
         default: cloud\n",
    );
    let rule = |f: Finding| p.decide(&signals(&[f], "m", "openai", 1)).rule;
    assert_eq!(rule(with_confidence(pii("phone"), 0.79)), "default");
    assert_eq!(rule(with_confidence(pii("phone"), 0.8)), "people");
    assert_eq!(rule(with_confidence(pii("email"), 0.3)), "people");
    assert_eq!(rule(with_confidence(pii("email"), 0.29)), "default");
    assert_eq!(rule(with_confidence(secret("jwt"), 0.01)), "keys");
    assert_eq!(rule(with_confidence(term(), 0.49)), "default");
    assert_eq!(rule(with_confidence(term(), 0.5)), "words");

    let findings = [
        with_confidence(pii("phone"), 0.6),
        with_confidence(pii("email"), 0.6),
        with_confidence(term(), 0.2),
        with_confidence(secret("jwt"), 0.2),
    ];
    let kept: Vec<&str> = p.relevant_findings(&findings).iter().map(|f| f.kind).collect();
    assert_eq!(kept, ["email", "jwt"]);
    // decide() filters the same way whichever list it is given.
    let relevant = p.relevant_findings(&findings);
    assert_eq!(p.decide(&signals(&findings, "m", "openai", 1)), p.decide(&signals(&relevant, "m", "openai", 1)));
    // Without min_confidence every finding counts.
    let all = team("default: cloud\n").relevant_findings(&findings);
    assert_eq!(all, findings);
}

#[test]
fn min_confidence_errors_name_the_bad_entry() {
    let (line, reason) = one_error("default: cloud\nmin_confidence:\n  emial: 0.5\n");
    assert_eq!(line, Some(3), "{reason}");
    assert!(reason.contains("unknown finding type `emial`"), "{reason}");
    assert!(reason.contains("email, credit_card"), "{reason}");
    assert!(reason.contains("aws_access_key"), "{reason}");
    let (line, reason) = one_error("default: cloud\nmin_confidence:\n  default: 0.2\n  email: 1.5\n");
    assert_eq!(line, Some(4), "{reason}");
    assert!(reason.contains("from 0 to 1, not 1.5"), "{reason}");
    let (line, reason) = one_error("default: cloud\nmin_confidence:\n  email: 0.5\n  phone: 0.5\n  email: 0.6\n");
    assert_eq!(line, Some(5), "{reason}");
    assert!(reason.contains("`email` is listed twice"), "{reason}");
    let (line, reason) = one_error("default: cloud\nmin_confidence: [email]\n");
    assert_eq!(line, Some(2), "{reason}");
}

#[test]
fn redact_rules_replace_every_finding_or_only_those_listed() {
    let p = team(
        "rules:\n\
         - { name: some, when: { model: \"cheap*\" }, then: redact, redact: [email, secrets] }\n\
         - { name: all, when: { pii: any }, then: redact }\n\
         default: redact\n",
    );
    assert_eq!(Action::Redact.as_str(), "redact");
    let findings = [pii("email"), pii("phone"), secret("jwt"), term(), attachment()];
    let redacted = |model: &str| {
        let d = p.decide(&signals(&findings, model, "openai", 1));
        let kinds: Vec<&str> = p.findings_to_redact(&d, &findings).iter().map(|f| f.kind).collect();
        (d.action, d.rule, kinds)
    };
    assert_eq!(redacted("cheap-1"), (Action::Redact, "some".to_string(), vec!["email", "jwt"]));
    // Everything but the attachment, which is never redacted.
    assert_eq!(redacted("gpt-4o"), (Action::Redact, "all".to_string(), vec!["email", "phone", "jwt", "term"]));
    let d = p.decide(&signals(&[term()], "gpt-4o", "openai", 1));
    assert_eq!((d.action, d.rule.as_str()), (Action::Redact, "default"));
    assert_eq!(p.findings_to_redact(&d, &[term()]).len(), 1);

    // Weak findings are neither decided on nor redacted.
    let p = team("min_confidence: { email: 0.9 }\ndefault: redact\n");
    let weak = [with_confidence(pii("email"), 0.5), pii("phone")];
    let d = p.decide(&signals(&weak, "m", "openai", 1));
    assert_eq!(p.findings_to_redact(&d, &weak), [pii("phone")]);
}

#[test]
fn only_redact_decisions_redact_and_the_scope_serializes_plainly() {
    let p = team(
        "rules:\n\
         - { name: r, when: { pii: any }, then: redact, redact: [pii, term] }\n\
         default: cloud\n",
    );
    let findings = [pii("email")];
    let d = p.decide(&signals(&findings, "m", "openai", 1));
    let json = serde_json::to_value(&d).expect("a decision serializes");
    assert_eq!(json["action"], "redact");
    assert_eq!(json["redact"], serde_json::json!(["pii", "term"]));
    assert_eq!(json["because"], serde_json::json!(["pii: email"]));
    let d = p.decide(&signals(&[], "m", "openai", 1));
    assert_eq!(d.redact, None);
    assert!(p.findings_to_redact(&d, &findings).is_empty());
    let json = serde_json::to_value(&d).expect("a decision serializes");
    assert!(json.get("redact").is_none(), "{json}");
    let all = team("default: redact\n").decide(&signals(&[], "m", "openai", 1));
    let json = serde_json::to_value(&all).expect("a decision serializes");
    assert_eq!(json["redact"], "all");
}

#[test]
fn redact_lists_are_checked_where_they_are_written() {
    let cases = [
        (
            "then: local\n  redact: [email]",
            // Known once the whole rule is read: reported at the rule.
            3,
            "only limits what a `then: redact` rule replaces",
        ),
        ("then: redact\n  redact: [emial]", 6, "unknown finding type `emial`"),
        ("then: redact\n  redact: [attachments]", 6, "cannot be redacted"),
        ("then: redact\n  redact: opaque_attachment", 6, "cannot be redacted"),
        ("then: redact\n  redact: []", 6, "would replace nothing"),
    ];
    for (tail, want_line, expected) in cases {
        let (line, reason) =
            one_error(&format!("default: cloud\nrules:\n- name: r\n  when: {{ pii: any }}\n  {tail}\n"));
        assert!(reason.contains(expected), "{tail}: {reason}");
        assert_eq!(line, Some(want_line), "{tail}: {reason}");
    }
}

#[test]
fn task_conditions_need_a_prediction_of_a_listed_task() {
    let p = team(
        "rules:\n\
         - { name: sure, when: { task: [code_completion, extraction], task_confidence: { min: 0.6 } }, then: local }\n\
         - { name: any-math, when: { task: math_reasoning }, then: block }\n\
         - { name: unsure, when: { task_confidence: { lt: 0.2 } }, then: cloud }\n\
         default: redact\n",
    );
    let rule = |t| p.decide(&routing(|s| s.task = t)).rule;
    assert_eq!(rule(task("code_completion", 0.6)), "sure");
    assert_eq!(rule(task("extraction", 0.95)), "sure");
    assert_eq!(rule(task("code_completion", 0.59)), "default");
    assert_eq!(rule(task("math_reasoning", 0.1)), "any-math");
    assert_eq!(rule(task("translation", 0.1)), "unsure");
    assert_eq!(rule(task("translation", 0.2)), "default");
    // No prediction: neither task nor task_confidence holds.
    assert_eq!(rule(None), "default");
    let d = p.decide(&routing(|s| s.task = task("code_completion", 0.91)));
    assert_eq!(d.because, ["task: code_completion (0.91)", "task_confidence: 0.91 >= 0.6"]);
    assert_eq!(d.reason, "rule sure matched: task: code_completion (0.91); task_confidence: 0.91 >= 0.6");
}

#[test]
fn count_conditions_compare_their_own_signal() {
    let p = team(
        "rules:\n\
         - { name: turns, when: { turns: { min: 10, max: 20 } }, then: block }\n\
         - { name: steps, when: { tool_steps: { gte: 5 } }, then: cloud }\n\
         - { name: queue, when: { local_queue_depth: { gt: 3 } }, then: redact }\n\
         - { name: small, when: { prompt_tokens: { max: 50 } }, then: local }\n\
         default: cloud\n",
    );
    let rule = |f: fn(&mut Signals<'static>)| p.decide(&routing(f)).rule;
    assert_eq!(rule(|s| s.turns = 10), "turns");
    assert_eq!(rule(|s| s.turns = 20), "turns");
    assert_eq!(rule(|s| (s.turns, s.prompt_tokens) = (21, 99)), "default");
    assert_eq!(rule(|s| (s.tool_steps, s.prompt_tokens) = (5, 99)), "steps");
    assert_eq!(rule(|s| (s.tool_steps, s.prompt_tokens) = (4, 99)), "default");
    assert_eq!(rule(|s| (s.local_queue_depth, s.prompt_tokens) = (4, 99)), "queue");
    assert_eq!(rule(|s| (s.local_queue_depth, s.prompt_tokens) = (3, 99)), "default");
    assert_eq!(rule(|s| s.prompt_tokens = 50), "small");
    let d = p.decide(&routing(|s| (s.tool_steps, s.prompt_tokens) = (6, 99)));
    assert_eq!(d.because, ["tool_steps: 6 >= 5"]);
    let d = p.decide(&routing(|s| s.turns = 12));
    assert_eq!(d.because, ["turns: 10 <= 12 <= 20"]);
    let d = p.decide(&routing(|s| (s.local_queue_depth, s.prompt_tokens) = (7, 99)));
    assert_eq!(d.because, ["local_queue_depth: 7 > 3"]);
    let d = p.decide(&routing(|s| s.prompt_tokens = 9));
    assert_eq!(d.because, ["prompt_tokens: 9 <= 50"]);
}

#[test]
fn cost_conditions_never_hold_for_unpriced_models() {
    let p = team(
        "rules:\n\
         - { name: pricey, when: { estimated_cost_usd: { gt: 0.25 } }, then: block }\n\
         - { name: cheap, when: { estimated_cost_usd: { max: 0.25 } }, then: local }\n\
         default: cloud\n",
    );
    let decide = |cost| p.decide(&routing(|s| s.estimated_cost_usd = cost));
    assert_eq!(decide(Some(0.42)).rule, "pricey");
    assert_eq!(decide(Some(0.42)).because, ["estimated_cost_usd: 0.42 > 0.25"]);
    assert_eq!(decide(Some(0.25)).rule, "cheap");
    assert_eq!(decide(Some(0.0)).rule, "cheap");
    assert_eq!(decide(None).rule, "default");
}

#[test]
fn flag_conditions_and_the_requested_model_alias() {
    let p = team(
        "rules:\n\
         - { name: agent, when: { tools_present: true, stream: false }, then: cloud }\n\
         - { name: chat, when: { tools_present: false, stream: true, requested_model: \"gpt-4*\" }, then: local }\n\
         default: block\n",
    );
    let rule = |tools: bool, stream: bool, model: &'static str| {
        p.decide(&routing(|s| {
            s.tools_present = tools;
            s.stream = stream;
            s.requested_model = model;
        }))
        .rule
    };
    assert_eq!(rule(true, false, "x"), "agent");
    assert_eq!(rule(true, true, "gpt-4o"), "default");
    assert_eq!(rule(false, true, "gpt-4o"), "chat");
    assert_eq!(rule(false, true, "claude-3"), "default");
    assert_eq!(rule(false, false, "gpt-4o"), "default");
    let d = p.decide(&routing(|s| s.stream = true));
    assert_eq!(d.because, ["model: gpt-4o", "tools_present: false", "stream: true"]);
    let (line, reason) =
        one_error("default: cloud\nrules:\n- name: r\n  when: { model: a, requested_model: b }\n  then: local\n");
    assert_eq!(line, Some(4), "{reason}");
    assert!(reason.contains("duplicate field"), "{reason}");
}

#[test]
fn bad_routing_conditions_are_reported_where_they_are() {
    let cases = [
        ("when: { task: [code_completion, poetry] }", "unknown task `poetry`"),
        ("when: { task: any }", "not allowed"),
        ("when: { task: [] }", "never matches"),
        ("when: { task_confidence: { min: 1.2 } }", "from 0 to 1, not 1.2"),
        ("when: { turns: { min: 5, max: 3 } }", "can never all hold"),
        ("when: { tool_steps: { gt: 2, lt: 3 } }", "can never all hold"),
        ("when: { local_queue_depth: { lt: 0 } }", "can never all hold"),
        ("when: { turns: { min: 2.5 } }", "whole number"),
        ("when: { estimated_cost_usd: { min: -1 } }", "not -1"),
        ("when: { estimated_cost_usd: { gt: 0.5, lt: 0.5 } }", "can never all hold"),
        ("when: { stream: sometimes }", "sometimes"),
        ("when: { tool_step: { min: 5 } }", "unknown field `tool_step`"),
        ("when: { turns: { least: 5 } }", "unknown field `least`"),
    ];
    for (when, expected) in cases {
        let (line, reason) = one_error(&format!("default: cloud\nrules:\n- name: r\n  {when}\n  then: local\n"));
        assert_eq!(line, Some(4), "{when}: {reason}");
        assert!(reason.contains(expected), "{when}: {reason}");
    }
    let (_, reason) = one_error("default: cloud\nrules:\n- name: r\n  when: { task: poetry }\n  then: local\n");
    assert!(reason.contains("code_completion, code_generation"), "valid names are listed: {reason}");
    let (line, reason) = one_error("default: cloud\nsticky_local: sometimes\n");
    assert_eq!(line, Some(2), "{reason}");
    let (line, reason) = one_error("default: cloud\nsticky: true\n");
    assert_eq!(line, Some(2), "{reason}");
    assert!(reason.contains("unknown field `sticky`"), "{reason}");
}

#[test]
fn ranges_take_the_tightest_of_repeated_bounds() {
    let p = team(
        "rules:\n\
         - { name: r, when: { prompt_tokens: { min: 10, gt: 10, lte: 20, max: 30 } }, then: local }\n\
         default: cloud\n",
    );
    let rule = |n: u64| p.decide(&routing(|s| s.prompt_tokens = n)).rule;
    assert_eq!(rule(10), "default");
    assert_eq!(rule(11), "r");
    assert_eq!(rule(20), "r");
    assert_eq!(rule(21), "default");
    assert_eq!(p.decide(&routing(|s| s.prompt_tokens = 15)).because, ["prompt_tokens: 10 < 15 <= 20"]);
}

#[test]
fn sticky_conversations_stay_local_unless_a_block_rule_matches() {
    let p = team(
        "rules:\n\
         - { name: long, when: { prompt_tokens: { gt: 100 } }, then: cloud }\n\
         - { name: cards, when: { pii: [credit_card] }, then: local }\n\
         - { name: mail, when: { pii: [email] }, then: redact }\n\
         - { name: keys, when: { secrets: any }, then: block }\n\
         default: cloud\n",
    );
    let sticky = |f: &[Finding], tokens: u64| {
        p.decide(&Signals { findings: f, prompt_tokens: tokens, sticky_local: true, ..Signals::default() })
    };
    let d = sticky(&[], 1);
    assert_eq!((d.action, d.rule.as_str()), (Action::Local, "sticky_local"));
    assert!(d.sticky);
    assert!(d.reason.contains("earlier turn"), "{}", d.reason);
    assert_eq!(d.because, ["sticky_local: earlier turn was sensitive"]);
    // Rules that would send it out, redacted or not, do not.
    assert_eq!(sticky(&[], 500).rule, "sticky_local");
    assert_eq!(sticky(&[pii("email")], 1).rule, "sticky_local");
    // A block rule wins even when an earlier rule also matches.
    let d = sticky(&[secret("jwt"), pii("credit_card")], 500);
    assert_eq!((d.action, d.rule.as_str()), (Action::Block, "keys"));
    assert!(!d.sticky);

    // A `block` default still refuses what no rule allows.
    let strict = team("rules:\n- { name: cards, when: { pii: any }, then: local }\ndefault: block\n");
    let d = strict.decide(&routing(|s| s.sticky_local = true));
    assert_eq!((d.action, d.rule.as_str()), (Action::Block, "default"));

    // With the option off every turn is judged alone.
    let off = team("sticky_local: false\nrules:\n- { name: cards, when: { pii: any }, then: local }\ndefault: cloud\n");
    assert!(!off.sticky_local());
    assert_eq!(off.decide(&routing(|s| s.sticky_local = true)).rule, "default");
    let d = off.decide(&signals(&[pii("email")], "m", "openai", 1));
    assert!(!d.sticky, "nothing to remember when the option is off");
}

#[test]
fn only_local_decisions_about_content_make_a_conversation_sticky() {
    let p = team(
        "rules:\n\
         - { name: cards, when: { pii: any }, then: local }\n\
         - { name: words, when: { terms: any, model: \"x*\" }, then: local }\n\
         - { name: files, when: { attachments: true }, then: local }\n\
         - { name: code, when: { task: code_completion }, then: local }\n\
         - { name: keys, when: { secrets: any }, then: block }\n\
         default: local\n",
    );
    let sticky = |f: &[Finding], t| {
        p.decide(&Signals { findings: f, requested_model: "x1", task: t, ..Signals::default() }).sticky
    };
    assert!(sticky(&[pii("email")], None));
    assert!(sticky(&[term()], None));
    assert!(sticky(&[attachment()], None));
    assert!(!sticky(&[], task("code_completion", 0.9)));
    assert!(!sticky(&[secret("jwt")], None));
    assert!(!sticky(&[], None), "the default is not about content");
}

#[test]
fn unparsed_requests_fail_closed_unless_the_policy_says_otherwise() {
    let load = |extra: &str| {
        team(&format!("rules:\n- {{ name: pii-out, when: {{ pii: any }}, then: redact }}\n{extra}default: cloud\n"))
    };
    let unparsed = |findings| Signals { findings, unparsed: true, ..Signals::default() };
    let email = [pii("email")];
    // Default: findings in an unparsed body block, clean ones go by the rules.
    let p = load("");
    let d = p.decide(&unparsed(&email));
    assert_eq!((d.action, d.rule.as_str()), (Action::Block, "unparsed_requests"));
    assert_eq!(d.because, ["unparsed: true (unparsed_requests: block_findings)"]);
    assert_eq!(p.decide(&unparsed(&[])).action, Action::Cloud);
    // A parsed request with the same finding is redacted as before.
    assert_eq!(p.decide(&Signals { findings: &email, ..Signals::default() }).action, Action::Redact);
    // `block` refuses every unparsed body; `rules` lets the rules decide.
    assert_eq!(load("unparsed_requests: block\n").decide(&unparsed(&[])).action, Action::Block);
    assert_eq!(load("unparsed_requests: rules\n").decide(&unparsed(&email)).action, Action::Redact);
    // The `unparsed` condition singles them out.
    let p = team(
        "unparsed_requests: rules\nrules:\n- { name: odd, when: { unparsed: true }, then: local }\ndefault: cloud\n",
    );
    assert_eq!(p.decide(&unparsed(&[])).rule, "odd");
    assert_eq!(p.decide(&Signals::default()).rule, "default");
    let (_, reason) = one_error("unparsed_requests: sometimes\ndefault: cloud\n");
    assert!(reason.contains("block_findings"), "{reason}");
    let (_, reason) =
        one_error("rules:\n- { name: unparsed_requests, when: { stream: true }, then: cloud }\ndefault: cloud\n");
    assert!(reason.contains("reserved"), "{reason}");
}

#[test]
fn signal_summary_reports_numbers_and_names_only() {
    let findings = [pii("email")];
    let s = Signals {
        findings: &findings,
        requested_model: "gpt-4o",
        provider: "openai",
        prompt_tokens: 9000,
        prompt_tokens_exact: true,
        task: task("code_completion", 0.91),
        turns: 3,
        tool_steps: 6,
        tools_present: true,
        stream: true,
        unparsed: false,
        estimated_cost_usd: Some(0.42),
        local_queue_depth: 2,
        sticky_local: false,
    };
    let summary = s.summary();
    assert_eq!(summary.task, Some("code_completion"));
    assert_eq!(summary.tool_steps, 6);
    let json = serde_json::to_value(&summary).expect("a summary serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "task": "code_completion",
            "task_confidence": 0.91,
            "prompt_tokens": 9000,
            "prompt_tokens_exact": true,
            "turns": 3,
            "tool_steps": 6,
            "tools_present": true,
            "stream": true,
            "estimated_cost_usd": 0.42,
            "local_queue_depth": 2,
            "sticky_local": false,
            "provider": "openai",
            "finding_confidence": {"email": 1.0}
        })
    );
    let empty = serde_json::to_value(Signals::default().summary()).expect("serializes");
    assert_eq!(empty["task"], serde_json::Value::Null);
    assert_eq!(empty["estimated_cost_usd"], serde_json::Value::Null);
}

#[test]
fn numbers_are_written_as_people_write_them() {
    assert_eq!(schema::number(6000.0), "6000");
    assert_eq!(schema::number(0.25), "0.25");
    assert_eq!(schema::number(f64::from(0.91f32)), "0.91");
    assert_eq!(schema::number(0.1 + 0.2), "0.3");
}

fn special(kind: &'static str) -> Finding {
    finding(Category::Special, kind)
}

#[test]
fn people_and_special_category_conditions_combine() {
    let p = team(
        "rules:\n  - name: person-with-health\n    when: { people: any, special_category: [health] }\n    then: local\n  \
         - name: any-special\n    when: { special_category: any }\n    then: block\n  \
         - name: addresses\n    when: { people: [street_address] }\n    then: local\n  \
         - name: names\n    when: { people: any }\n    then: redact\ndefault: cloud\n",
    );
    let decide = |findings: &[Finding]| {
        let d = p.decide(&signals(findings, "m", "openai", 10));
        (d.action, d.rule, d.because)
    };
    let (action, rule, because) = decide(&[pii("person"), special("health")]);
    assert_eq!((action, rule.as_str()), (Action::Local, "person-with-health"));
    assert_eq!(because, ["people: person", "special_category: health"]);
    assert_eq!(decide(&[special("health")]).1, "any-special");
    assert_eq!(decide(&[pii("person"), special("religion")]).1, "any-special");
    assert_eq!(decide(&[pii("street_address")]).1, "addresses");
    assert_eq!(decide(&[pii("person")]).0, Action::Redact);
    assert_eq!(decide(&[pii("email")]).1, "default");
    // A special-category finding is not PII: `pii: any` ignores it.
    let p = team("rules:\n  - name: any-pii\n    when: { pii: any }\n    then: local\ndefault: cloud\n");
    assert_eq!(p.decide(&signals(&[special("health")], "m", "openai", 10)).rule, "default");
}

#[test]
fn special_category_findings_are_sticky_and_filtered_by_confidence() {
    let p = team(
        "min_confidence: { special_category: 0.5 }\nrules:\n  - name: s\n    when: { special_category: any }\n    \
         then: local\ndefault: cloud\n",
    );
    let topic = with_confidence(special("health"), 0.35);
    assert_eq!(p.decide(&signals(&[topic], "m", "openai", 10)).action, Action::Cloud);
    let d = p.decide(&signals(&[special("health")], "m", "openai", 10));
    assert!(d.action == Action::Local && d.sticky, "{d:?}");
}

#[test]
fn unknown_people_and_special_names_are_errors_at_their_line() {
    let (line, reason) =
        one_error("rules:\n  - name: r\n    when:\n      special_category: [health, astrology]\n    then: local\ndefault: cloud\n");
    assert_eq!(line, Some(4));
    assert!(reason.contains("unknown special category `astrology`"), "{reason}");
    assert!(reason.contains("sexual_orientation"), "{reason}");
    let (line, reason) =
        one_error("rules:\n  - name: r\n    when:\n      people: [email]\n    then: local\ndefault: cloud\n");
    assert_eq!(line, Some(4));
    assert!(reason.contains("unknown people type `email`"), "{reason}");
}

fn entity(kind: &'static str) -> Finding {
    finding(Category::Entity, kind)
}

#[test]
fn entities_are_their_own_condition_and_not_pii() {
    let p = team(
        "rules:\n  - name: person-with-place\n    when: { people: any, entities: [location] }\n    then: local\n  \
         - name: companies\n    when: { entities: [organization] }\n    then: redact\n    redact: [entities]\n  \
         - name: any-pii\n    when: { pii: any }\n    then: block\ndefault: cloud\n",
    );
    let decide = |findings: &[Finding]| p.decide(&signals(findings, "m", "openai", 10));
    let d = decide(&[pii("person"), entity("location")]);
    assert_eq!((d.action, d.rule.as_str()), (Action::Local, "person-with-place"));
    assert_eq!(d.because, ["people: person", "entities: location"]);
    assert!(d.sticky, "a rule on what the prompt contains keeps the conversation local");
    // `pii: any` does not see entities.
    assert_eq!(decide(&[entity("location")]).rule, "default");
    assert_eq!(decide(&[entity("nationality")]).rule, "default");
    let d = decide(&[entity("organization")]);
    assert_eq!((d.action, d.rule.as_str()), (Action::Redact, "companies"));
    let found = [entity("organization"), entity("location")];
    assert_eq!(p.findings_to_redact(&d, &found).len(), 2);
    // A type names one kind of entity, `entities` all of them.
    let p = team(
        "min_confidence: { entities: 0.9, location: 0.5 }\nrules:\n  - name: r\n    when: { entities: any }\n    \
         then: redact\n    redact: [location]\ndefault: cloud\n",
    );
    let low_org = with_confidence(entity("organization"), 0.6);
    assert_eq!(p.decide(&signals(std::slice::from_ref(&low_org), "m", "openai", 10)).rule, "default");
    let low_place = with_confidence(entity("location"), 0.6);
    let d = p.decide(&signals(&[low_place.clone(), low_org.clone()], "m", "openai", 10));
    assert_eq!(d.rule, "r");
    assert_eq!(p.findings_to_redact(&d, &[low_place.clone(), low_org]), vec![low_place]);
    // An unparsed body with only entities is not refused for them.
    let p = team("default: cloud\n");
    let unparsed = Signals { findings: &found, unparsed: true, ..Signals::default() };
    assert_eq!(p.decide(&unparsed).action, Action::Cloud);
    let (line, reason) =
        one_error("rules:\n  - name: r\n    when:\n      entities: [city]\n    then: local\ndefault: cloud\n");
    assert_eq!(line, Some(4));
    assert!(reason.contains("unknown entity type `city`") && reason.contains("organization"), "{reason}");
    let (_, reason) = one_error(
        "rules:\n  - name: r\n    when: { pii: any }\n    then: redact\n    redact: [town]\ndefault: cloud\n",
    );
    assert!(reason.contains("the entity types location, organization, nationality"), "{reason}");
}

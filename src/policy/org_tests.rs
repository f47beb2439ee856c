//! org.yaml, profiles (`extends:`), monitor mode and the live set's reload.

use super::*;
use crate::inspect::Category;
use std::fs;

fn finding(category: Category, kind: &'static str, confidence: f32) -> Finding {
    Finding { category, kind, segment: 0, span: 0..1, confidence, validator: "test" }
}

fn secret() -> Finding {
    finding(Category::Secret, "aws_access_key", 1.0)
}

fn email() -> Finding {
    finding(Category::Pii, "email", 1.0)
}

fn with(findings: &[Finding]) -> Signals<'_> {
    Signals { findings, requested_model: "gpt-4o", provider: "openai", ..Signals::default() }
}

/// A policy directory holding `files` (paths may name `profiles/`).
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir can be created in tests");
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().expect("files are in the directory")).expect("writable temp dir");
        fs::write(path, text).expect("writable temp dir");
    }
    dir
}

fn load(files: &[(&str, &str)]) -> PolicySet {
    let dir = dir_with(files);
    match PolicySet::load_dir(dir.path()) {
        Ok(set) => set,
        Err(e) => panic!("policies should load:\n{e}"),
    }
}

/// Every error, as (file relative to the directory, line, reason).
fn load_errors(files: &[(&str, &str)]) -> Vec<(String, Option<usize>, String)> {
    let dir = dir_with(files);
    match PolicySet::load_dir(dir.path()) {
        Ok(_) => panic!("policies should have been rejected"),
        Err(PolicyErrors(errors)) => errors
            .into_iter()
            .map(|e| {
                let file = e.file.strip_prefix(dir.path()).unwrap_or(&e.file).to_string_lossy().into_owned();
                (file, e.line, e.reason)
            })
            .collect(),
    }
}

const ORG: &str = "rules:\n\
                   \x20 - name: no-secrets\n\
                   \x20   when: { secrets: any }\n\
                   \x20   then: block\n";

#[test]
fn org_rules_come_first_and_a_team_rule_cannot_allow_what_they_refuse() {
    let set = load(&[
        ("org.yaml", ORG),
        ("default.yaml", "default: cloud\n"),
        // The team tries to let credentials through to the cloud.
        ("ops.yaml", "rules:\n  - name: keys-are-fine\n    when: { secrets: any }\n    then: cloud\ndefault: local\n"),
    ]);
    assert_eq!(set.teams().collect::<Vec<_>>(), ["default", "ops"], "org.yaml is not a team");
    for team in ["default", "ops"] {
        let d = set.team(team).expect("loaded").decide(&with(&[secret()]));
        assert_eq!(
            (d.action, d.rule.as_str(), &*d.decided_by),
            (Action::Block, "org:no-secrets", "org.yaml#no-secrets")
        );
        assert_eq!(d.reason, "rule org:no-secrets matched: secrets: aws_access_key");
    }
    // What the org does not decide, the team does.
    let d = set.team("ops").expect("loaded").decide(&with(&[]));
    assert_eq!((d.action, d.rule.as_str(), &*d.decided_by), (Action::Local, "default", "ops.yaml#default"));
}

#[test]
fn a_team_rule_named_like_an_org_rule_is_an_error_at_its_line() {
    let errs = load_errors(&[
        ("org.yaml", ORG),
        ("default.yaml", "default: cloud\n"),
        ("ops.yaml", "default: cloud\nrules:\n  - name: other\n    when: { pii: any }\n    then: local\n  - name: no-secrets\n    when: { secrets: any }\n    then: cloud\n"),
    ]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let (file, line, reason) = &errs[0];
    assert_eq!((file.as_str(), *line), ("ops.yaml", Some(6)));
    assert!(reason.contains("`no-secrets` is an organisation rule (org.yaml, line 2)"), "{reason}");
    assert!(reason.contains("cannot be overridden"), "{reason}");
}

#[test]
fn org_yaml_takes_only_what_applies_to_every_team() {
    let errs = load_errors(&[("org.yaml", "rules: []\ndefault: cloud\n"), ("default.yaml", "default: cloud\n")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0.as_str(), errs[0].1), ("org.yaml", Some(2)));
    assert!(errs[0].2.contains("unknown field `default`"), "{}", errs[0].2);

    let errs = load_errors(&[
        ("org.yaml", "rules:\n  - name: x\n    when: { pii: [mail] }\n    then: block\n"),
        ("default.yaml", "default: cloud\n"),
    ]);
    assert_eq!((errs[0].0.as_str(), errs[0].1), ("org.yaml", Some(3)), "{errs:?}");
}

#[test]
fn org_min_confidence_is_a_ceiling_on_every_team() {
    let weak_key = [finding(Category::Secret, "generic_secret", 0.3)];
    let weak_email = [finding(Category::Pii, "email", 0.3)];
    let team = "min_confidence: { default: 0.9 }\n\
                rules:\n  - name: mail-local\n    when: { pii: any }\n    then: local\n\
                default: cloud\n";
    let org = format!("min_confidence: {{ secrets: 0 }}\n{ORG}");
    let set = load(&[("org.yaml", &org), ("default.yaml", team)]);
    let p = set.team("default").expect("loaded");
    // The org counts every secret, whatever the team's threshold ...
    assert_eq!(p.decide(&with(&weak_key)).rule, "org:no-secrets");
    assert_eq!(p.relevant_findings(&weak_key).len(), 1);
    // ... and leaves the team's thresholds alone where it names none.
    assert_eq!(p.decide(&with(&weak_email)).rule, "default");
    assert!(p.relevant_findings(&weak_email).is_empty());

    // Without a ceiling the team's threshold applies to org rules too.
    let set = load(&[("org.yaml", ORG), ("default.yaml", team)]);
    assert_eq!(set.team("default").expect("loaded").decide(&with(&weak_key)).rule, "default");
}

const PROFILE: &str = "min_confidence: { pii: 0.5 }\n\
                       dictionary: { terms: [Falcon] }\n\
                       rules:\n\
                       \x20 - name: pii-local\n\
                       \x20   when: { pii: any }\n\
                       \x20   then: local\n\
                       \x20 - name: no-attachments\n\
                       \x20   when: { attachments: true }\n\
                       \x20   then: block\n\
                       default: block\n\
                       sticky_local: false\n\
                       local: { too_long: block }\n";

#[test]
fn extends_puts_the_profile_first_and_fills_in_what_the_team_leaves_out() {
    let set = load(&[
        ("org.yaml", ORG),
        ("profiles/strict.yaml", PROFILE),
        ("default.yaml", "default: cloud\n"),
        (
            "payments.yaml",
            "extends: strict\n\
             dictionary: { terms: [Ledgerline, Falcon] }\n\
             rules:\n  - name: mail-redacted\n    when: { pii: [email] }\n    then: redact\n\
             \x20 - name: long-cloud\n    when: { prompt_tokens: { gt: 100 } }\n    then: cloud\n",
        ),
        ("support.yaml", "extends: strict\ndefault: local\nsticky_local: true\n"),
    ]);
    assert_eq!(set.teams().collect::<Vec<_>>(), ["default", "payments", "support"], "profiles are not teams");
    let payments = set.team("payments").expect("loaded");
    // org first, then the profile's rules, then the team's own.
    assert_eq!(payments.decide(&with(&[secret(), email()])).rule, "org:no-secrets");
    let d = payments.decide(&with(&[email()]));
    assert_eq!(
        (d.action, d.rule.as_str(), &*d.decided_by),
        (Action::Local, "strict:pii-local", "profiles/strict.yaml#pii-local")
    );
    let long = Signals { prompt_tokens: 500, ..with(&[]) };
    assert_eq!(payments.decide(&long).rule, "long-cloud");
    // Settings it leaves out come from the profile; dictionaries add up.
    let d = payments.decide(&with(&[]));
    assert_eq!((d.action, &*d.decided_by), (Action::Block, "profiles/strict.yaml#default"));
    assert!(!payments.sticky_local());
    assert_eq!(payments.local_options().too_long, TooLong::Block);
    assert_eq!(payments.dictionary_terms(), ["Falcon", "Ledgerline"]);
    assert!(payments.relevant_findings(&[finding(Category::Pii, "email", 0.4)]).is_empty(), "the profile's threshold");
    // A team's own settings win.
    let support = set.team("support").expect("loaded");
    let d = support.decide(&with(&[]));
    assert_eq!((d.action, &*d.decided_by), (Action::Local, "support.yaml#default"));
    assert!(support.sticky_local());
}

#[test]
fn profiles_extend_profiles_base_first() {
    let set = load(&[
        ("profiles/base.yaml", "rules:\n  - name: b\n    when: { pii: any }\n    then: local\ndefault: cloud\n"),
        ("profiles/mid.yaml", "extends: base\nrules:\n  - name: m\n    when: { pii: any }\n    then: block\n"),
        ("default.yaml", "extends: mid\nrules:\n  - name: t\n    when: { pii: any }\n    then: cloud\n"),
    ]);
    let p = set.team("default").expect("loaded");
    assert_eq!(p.decide(&with(&[email()])).rule, "base:b");
    assert_eq!(&*p.decide(&with(&[])).decided_by, "profiles/base.yaml#default");
}

#[test]
fn missing_profiles_and_cycles_are_errors_at_the_extends_line() {
    let errs = load_errors(&[("default.yaml", "# team\ndescription: x\nextends: strcit\ndefault: cloud\n")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0.as_str(), errs[0].1), ("default.yaml", Some(3)));
    assert!(errs[0].2.contains("there is no profile `strcit`"), "{}", errs[0].2);

    let errs = load_errors(&[
        ("profiles/a.yaml", "extends: b\ndefault: cloud\n"),
        ("profiles/b.yaml", "description: b\nextends: a\n"),
        ("profiles/c.yaml", "extends: c\n"),
        ("profiles/d.yaml", "extends: a\n"),
        ("default.yaml", "extends: d\n"),
    ]);
    let summary: Vec<_> = errs.iter().map(|(f, l, r)| (f.as_str(), *l, r.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("profiles/a.yaml", Some(1), "`extends` makes a cycle: a -> b -> a"),
            ("profiles/b.yaml", Some(2), "`extends` makes a cycle: b -> a -> b"),
            ("profiles/c.yaml", Some(1), "`extends` makes a cycle: c -> c"),
        ],
        "d and default are not blamed for their bases' cycle"
    );

    let errs = load_errors(&[("default.yaml", "extends: Not-A-Name\ndefault: cloud\n")]);
    assert_eq!(errs[0].1, Some(1), "{errs:?}");
    assert!(errs[0].2.contains("invalid profile name"), "{errs:?}");
    let errs = load_errors(&[("default.yaml", "extends: org\ndefault: cloud\n")]);
    assert!(errs[0].2.contains("`org` is not a profile"), "{errs:?}");
}

#[test]
fn profile_rule_names_are_unique_along_the_chain_and_against_org() {
    let errs = load_errors(&[
        ("org.yaml", ORG),
        ("profiles/strict.yaml", PROFILE),
        ("profiles/keys.yaml", "rules:\n  - name: no-secrets\n    when: { secrets: any }\n    then: local\n"),
        ("default.yaml", "extends: strict\nrules:\n  - name: pii-local\n    when: { pii: any }\n    then: cloud\n"),
    ]);
    let summary: Vec<_> = errs.iter().map(|(f, l, _)| (f.as_str(), *l)).collect();
    assert_eq!(summary, [("profiles/keys.yaml", Some(2)), ("default.yaml", Some(3))], "{errs:?}");
    assert!(errs[0].2.contains("organisation rule"), "{errs:?}");
    assert!(
        errs[1].2.contains("already a rule of the profile this file extends (profiles/strict.yaml, line 4)"),
        "{errs:?}"
    );
}

#[test]
fn a_team_needs_a_default_of_its_own_or_from_its_profile() {
    let errs = load_errors(&[
        ("profiles/bare.yaml", "rules:\n  - name: r\n    when: { pii: any }\n    then: local\n"),
        ("default.yaml", "\n# comment\nextends: bare\n"),
    ]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0.as_str(), errs[0].1), ("default.yaml", Some(3)));
    assert!(errs[0].2.contains("missing field `default`: neither this file nor profile `bare` sets one"), "{errs:?}");
}

#[test]
fn broken_profiles_are_reported_even_when_no_team_uses_them() {
    let errs = load_errors(&[
        ("profiles/unused.yaml", "rules:\n  - name: r\n    when: { pii: any }\n    then: teleport\n"),
        ("profiles/Bad Name.yaml", "default: cloud\n"),
        ("default.yaml", "default: cloud\n"),
    ]);
    let summary: Vec<_> = errs.iter().map(|(f, l, _)| (f.as_str(), *l)).collect();
    assert_eq!(summary, [("profiles/Bad Name.yaml", None), ("profiles/unused.yaml", Some(4))], "{errs:?}");
}

#[test]
fn hidden_files_are_not_policies() {
    // An editor's lock or swap file next to the policies.
    let set = load(&[("default.yaml", "default: cloud\n"), (".#default.yaml", "garbage: ["), (".ops.yaml.swp", "x")]);
    assert_eq!(set.teams().collect::<Vec<_>>(), ["default"]);
}

#[test]
fn monitor_rules_record_what_they_would_do_and_let_evaluation_go_on() {
    let set = load(&[
        ("org.yaml", "rules:\n  - name: new-org-rule\n    when: { pii: any }\n    then: block\n    mode: monitor\n"),
        (
            "default.yaml",
            "rules:\n\
             \x20 - name: trial\n    when: { pii: [email] }\n    then: local\n    mode: monitor\n\
             \x20 - name: enforced\n    when: { pii: any }\n    then: redact\n\
             \x20 - name: late-trial\n    when: { pii: any }\n    then: block\n    mode: monitor\n\
             default: cloud\n",
        ),
    ]);
    let p = set.team("default").expect("loaded");
    let d = p.decide(&with(&[email()]));
    assert_eq!((d.action, d.rule.as_str()), (Action::Redact, "enforced"));
    assert_eq!(
        d.monitor,
        [
            MonitorMatch { rule: "org:new-org-rule".into(), action: Action::Block },
            MonitorMatch { rule: "trial".into(), action: Action::Local },
        ],
        "in order, and only those tried before the decision"
    );
    assert!(!d.sticky);
    let d = p.decide(&with(&[]));
    assert!(d.monitor.is_empty());
    assert_eq!(d.rule, "default");
}

#[test]
fn a_whole_file_in_monitor_mode_watches_its_rules_and_keeps_its_default() {
    let set = load(&[(
        "default.yaml",
        "mode: monitor\n\
         rules:\n\
         \x20 - name: keys\n    when: { secrets: any }\n    then: block\n\
         \x20 - name: pinned\n    when: { pii: any }\n    then: local\n    mode: enforce\n\
         default: cloud\n",
    )]);
    let p = set.team("default").expect("loaded");
    let d = p.decide(&with(&[secret()]));
    assert_eq!((d.action, d.rule.as_str()), (Action::Cloud, "default"));
    assert_eq!(d.monitor, [MonitorMatch { rule: "keys".into(), action: Action::Block }]);
    // A rule's own mode wins over its file's.
    assert_eq!(p.decide(&with(&[secret(), email()])).rule, "pinned");
}

#[test]
fn monitor_rules_never_decide_a_sticky_conversation_either() {
    let set = load(&[(
        "default.yaml",
        "rules:\n\
         \x20 - name: trial-block\n    when: { secrets: any }\n    then: block\n    mode: monitor\n\
         \x20 - name: pii-local\n    when: { pii: any }\n    then: local\n\
         default: cloud\n",
    )]);
    let p = set.team("default").expect("loaded");
    let keys = [secret()];
    let d = p.decide(&Signals { sticky_local: true, ..with(&keys) });
    assert_eq!((d.action, d.rule.as_str()), (Action::Local, "sticky_local"));
    assert_eq!(d.monitor, [MonitorMatch { rule: "trial-block".into(), action: Action::Block }]);
    let d = p.decide(&with(&[email()]));
    assert!(d.sticky, "an enforced local rule on findings still pins the conversation");
}

#[test]
fn bad_modes_are_errors_at_their_line() {
    let errs = load_errors(&[(
        "default.yaml",
        "default: cloud\nrules:\n  - name: r\n    when: { pii: any }\n    then: local\n    mode: shadow\n",
    )]);
    assert_eq!(errs[0].1, Some(6), "{errs:?}");
    assert!(errs[0].2.contains("unknown variant `shadow`, expected `enforce` or `monitor`"), "{errs:?}");
}

mod live {
    use super::*;
    use crate::config::ShadowConfig;
    use crate::policy::reload::{LivePolicies, Policies};

    const GOOD: &str = "rules:\n  - name: pii-local\n    when: { pii: any }\n    then: local\ndefault: cloud\n";
    const EDITED: &str = "rules:\n  - name: pii-blocked\n    when: { pii: any }\n    then: block\ndefault: cloud\n";
    const BROKEN: &str = "rules:\n  - name: pii-blocked\n    when: { pii: any }\n    then: teleport\ndefault: cloud\n";

    fn rule_for(policies: &Policies, findings: &[Finding]) -> String {
        policies.team("default").expect("default loaded").decide(&with(findings)).rule
    }

    #[test]
    fn a_reload_swaps_the_set_and_a_held_snapshot_keeps_deciding_as_before() {
        let dir = dir_with(&[("default.yaml", GOOD)]);
        let live = LivePolicies::start(dir.path(), &ShadowConfig::default(), vec!["default".into()])
            .expect("valid policies load");
        let before = live.current();
        fs::write(dir.path().join("default.yaml"), EDITED).expect("writable");
        live.reload().expect("the edit is valid");
        assert_eq!(rule_for(&live.current(), &[email()]), "pii-blocked");
        // A request that started before the reload finishes under its set.
        assert_eq!(rule_for(&before, &[email()]), "pii-local");
    }

    #[test]
    fn a_broken_edit_is_refused_and_reported_until_a_good_one_arrives() {
        let dir = dir_with(&[("default.yaml", GOOD)]);
        let live = LivePolicies::start(dir.path(), &ShadowConfig::default(), Vec::new()).expect("valid policies load");
        assert!(!live.status_detail().contains("failed"), "{}", live.status_detail());
        fs::write(dir.path().join("default.yaml"), BROKEN).expect("writable");
        let errors = live.reload().err().expect("the edit is refused");
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].line, Some(4));
        assert_eq!(rule_for(&live.current(), &[email()]), "pii-local", "the old set still decides");
        let detail = live.status_detail();
        assert!(detail.contains("failed; still deciding under the policies loaded before"), "{detail}");
        assert!(detail.contains("default.yaml:4:") && detail.contains("teleport"), "{detail}");

        fs::write(dir.path().join("default.yaml"), EDITED).expect("writable");
        live.reload().expect("the next edit is valid");
        assert_eq!(rule_for(&live.current(), &[email()]), "pii-blocked");
        assert!(!live.status_detail().contains("failed"), "{}", live.status_detail());
    }

    #[test]
    fn catalog_files_load_with_the_policies_and_their_errors_name_the_file() {
        let dir = dir_with(&[
            ("default.yaml", "default: cloud\nai_apps:\n  sanctioned: [acme-llm]\n"),
            (
                "acme.yaml.catalog",
                "- { id: acme-llm, name: Acme LLM, vendor: Acme, category: llm_api, domains: [llm.acme.test], source: \"https://acme.test\" }\n",
            ),
        ]);
        let shadow =
            ShadowConfig { catalog_files: vec![dir.path().join("acme.yaml.catalog")], ..ShadowConfig::default() };
        let policies = Policies::load(dir.path(), &shadow).expect("the team sanctions an app of the catalog file");
        assert!(policies.catalog().get("acme-llm").is_some());

        fs::write(dir.path().join("acme.yaml.catalog"), "- { id: acme-llm, name: [oops\n").expect("writable");
        let errors = Policies::load(dir.path(), &shadow).err().expect("a broken catalog file is refused");
        assert!(errors.0[0].file.ends_with("acme.yaml.catalog"), "{errors}");
        assert!(errors.0[0].line.is_some(), "{errors}");
    }

    #[test]
    fn dictionaries_are_part_of_the_set() {
        let dir = dir_with(&[
            ("default.yaml", "dictionary: { file: terms.txt }\ndefault: cloud\n"),
            ("terms.txt", "Falcon\n"),
        ]);
        let policies = Policies::load(dir.path(), &ShadowConfig::default()).expect("loads");
        assert!(policies.dictionary("default").is_some());
        assert!(policies.set().sources().iter().any(|p| p.ends_with("terms.txt")), "watched");
    }
}

use super::*;

#[test]
fn documented_example_parses_to_the_defaults() {
    let example = Config::parse(include_str!("../../sluice.example.yaml"), Path::new("sluice.example.yaml")).unwrap();
    let default = Config::default();
    assert_eq!(example.gateway.listen, default.gateway.listen);
    assert_eq!(example.gateway.max_body_bytes, default.gateway.max_body_bytes);
    let (e, d) = (&example.gateway, &default.gateway);
    assert_eq!(
        (e.max_connections, e.first_byte_timeout_ms, e.header_read_timeout_ms, e.idle_timeout_ms),
        (d.max_connections, d.first_byte_timeout_ms, d.header_read_timeout_ms, d.idle_timeout_ms)
    );
    assert_eq!(
        (e.http2_keepalive_interval_ms, e.http2_keepalive_timeout_ms, e.body_frame_timeout_ms, e.body_timeout_ms),
        (d.http2_keepalive_interval_ms, d.http2_keepalive_timeout_ms, d.body_frame_timeout_ms, d.body_timeout_ms)
    );
    assert_eq!(example.admin.max_connections, default.admin.max_connections);
    assert_eq!(example.admin.listen, default.admin.listen);
    assert_eq!(example.policies_dir, default.policies_dir);
    assert_eq!(example.audit.dir, default.audit.dir);
    assert_eq!(example.audit.durability, default.audit.durability);
    assert_eq!(example.identity.anonymous_team, default.identity.anonymous_team);
    assert!(example.identity.networks.is_empty() && example.identity.trusted_proxies.is_none());
    let (e, d) = (&example.limits, &default.limits);
    assert_eq!(
        (&e.store, &e.dir, e.on_store_error, e.redis_timeout_ms),
        (&d.store, &d.dir, d.on_store_error, d.redis_timeout_ms)
    );
    assert_eq!(example.providers.openai.models, default.providers.openai.models);
    assert_eq!(example.upstream.response_timeout_ms, default.upstream.response_timeout_ms);
    assert_eq!(example.proxy.intercept, default.proxy.intercept);
    let (e, d) = (&example.shadow, &default.shadow);
    assert_eq!(
        (e.enabled, e.record_other_tunnels, &e.fingerprint_key),
        (d.enabled, d.record_other_tunnels, &d.fingerprint_key)
    );
    assert!(e.catalog_files.is_empty() && e.company_accounts.is_empty());
}

#[test]
fn the_default_intercept_list_is_the_catalogs_readable_api_hosts() {
    let intercept = Config::default().proxy.intercept;
    for host in ["api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "*.openai.azure.com"] {
        assert!(intercept.iter().any(|h| h == host), "{host} in {intercept:?}");
    }
    // Every provider the pipeline knows stays intercepted.
    for host in crate::wire::providers::default_intercept() {
        assert!(intercept.contains(&host), "{host} in {intercept:?}");
    }
    // Chat apps' own sites are tunneled, not intercepted.
    assert!(!intercept.iter().any(|h| h == "chatgpt.com" || h == "claude.ai"));
}

#[test]
fn errors_carry_line_and_reason() {
    let err = Config::parse("gateway:\n  listen: 127.0.0.1:8080\n  lisen: x\n", Path::new("s.yaml")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("s.yaml:3:"), "{text}");
    assert!(text.contains("unknown field `lisen`"), "{text}");
    let err =
        Config::parse("identity: { tokens: [ { sha256: abc, team: t, user: u } ] }", Path::new("s.yaml")).unwrap_err();
    assert!(err.to_string().contains("64 hex"));
    let err = Config::parse("upstream: { resolve: { a.com: not-an-ip } }", Path::new("s.yaml")).unwrap_err();
    assert!(err.to_string().contains("not an IP"));
    let err = Config::parse("gateway: { body_timeout_ms: 0 }", Path::new("s.yaml")).unwrap_err();
    assert!(err.to_string().contains("gateway.body_timeout_ms must be at least 1"), "{err}");
    let err = Config::parse("admin: { max_connections: 0 }", Path::new("s.yaml")).unwrap_err();
    assert!(err.to_string().contains("admin.max_connections"), "{err}");
}

#[test]
fn empty_file_means_defaults_and_relative_paths_follow_the_file() {
    let c = Config::parse("", Path::new("x.yaml")).unwrap();
    assert_eq!(c.gateway.listen.port(), 8080);
    let c = Config::parse("policies_dir: pol\n", Path::new("/etc/sluice/s.yaml"))
        .unwrap()
        .rebased(Path::new("/etc/sluice"));
    assert_eq!(c.policies_dir, PathBuf::from("/etc/sluice/pol"));
}

#[test]
fn phone_regions_are_region_codes() {
    let c = Config::parse("inspect: { phone_regions: [de, AT, CH] }", Path::new("s.yaml")).unwrap();
    assert_eq!(c.inspect.phone_regions().codes().collect::<Vec<_>>(), ["DE", "AT", "CH"]);
    let err = Config::parse("inspect: { phone_regions: [US, EU] }", Path::new("s.yaml")).unwrap_err();
    assert!(err.to_string().contains("inspect.phone_regions: unknown phone region `EU`"), "{err}");
    let example = Config::parse(include_str!("../../sluice.example.yaml"), Path::new("sluice.example.yaml")).unwrap();
    assert_eq!(example.inspect.phone_regions, Config::default().inspect.phone_regions);
}

#[test]
fn audit_durability_is_strict_unless_batched_is_asked_for() {
    use crate::audit::Durability;
    assert_eq!(Config::default().audit.durability, Durability::Strict);
    let batched = Config::parse("audit: { durability: batched }\n", Path::new("t.yaml")).unwrap();
    assert_eq!(batched.audit.durability, Durability::Batched);
    let strict = Config::parse("audit: { durability: strict }\n", Path::new("t.yaml")).unwrap();
    assert_eq!(strict.audit.durability, Durability::Strict);
    let err = Config::parse("audit: { durability: sometimes }\n", Path::new("t.yaml")).unwrap_err().to_string();
    assert!(err.contains("strict") && err.contains("batched"), "{err}");
}

#[test]
fn identity_networks_trusted_proxies_and_limits_are_checked() {
    let ok = Config::parse(
        "identity:\n  networks: [ { cidr: 10.20.0.0/16, team: payments }, { cidr: \"fd00::/8\", team: lab, user: bench } ]\n  trusted_proxies: { from: [10.0.0.5/32], user_header: x-forwarded-user, team_header: x-forwarded-team }\nlimits: { store: \"redis://127.0.0.1:6379/1\", on_store_error: open }\n",
        Path::new("s.yaml"),
    )
    .unwrap();
    assert_eq!(ok.identity.networks.len(), 2);
    assert_eq!(ok.limits.on_store_error, OnStoreError::Open);
    for (bad, says) in [
        ("identity: { networks: [ { cidr: 10.20.0.0/33, team: payments } ] }", "networks[0].cidr"),
        ("identity: { networks: [ { cidr: 10.0.0.0/8, team: Payments } ] }", "networks[0].team"),
        ("identity: { trusted_proxies: { from: [], user_header: x-user } }", "trusted_proxies.from"),
        ("identity: { trusted_proxies: { from: [10.0.0.1], user_header: authorization } }", "user_header"),
        ("identity: { trusted_proxies: { from: [10.0.0.1], user_header: X-User } }", "lower case"),
        ("identity: { anonymous_team: \"Everyone\" }", "anonymous_team"),
        ("limits: { store: \"memcached://h:1\" }", "limits.store"),
        ("limits: { store: \"redis://h:1\", redis_timeout_ms: 0 }", "redis_timeout_ms"),
        ("limits: { on_store_error: maybe }", "on_store_error"),
    ] {
        let err = Config::parse(bad, Path::new("s.yaml")).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

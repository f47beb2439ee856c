use super::*;
use std::os::unix::fs::PermissionsExt;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn patterns() -> Vec<String> {
    ["api.openai.com", "*.openai.azure.com", "bedrock-runtime.*.amazonaws.com"].iter().map(|s| s.to_string()).collect()
}

fn ca_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    init(&dir, &patterns(), false).unwrap();
    (tmp, dir)
}

fn ca_der(dir: &Path) -> CertificateDer<'static> {
    let path = CaFiles::in_dir(dir).cert;
    first_cert(&path, &fs::read_to_string(&path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_private_key_and_refuses_overwrite() {
    let (_tmp, dir) = ca_dir();
    let files = CaFiles::in_dir(&dir);
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let before = fs::read_to_string(&files.cert).unwrap();

    let err = init(&dir, &patterns(), false).unwrap_err();
    assert!(matches!(err, CaError::Exists(ref p) if *p == files.key), "{err}");
    assert_eq!(fs::read_to_string(&files.cert).unwrap(), before);

    init(&dir, &patterns(), true).unwrap();
    assert_ne!(fs::read_to_string(&files.cert).unwrap(), before);
    assert_eq!(mode(&files.key), 0o600);
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn load_tightens_a_loose_ca_directory() {
    let (_tmp, dir) = ca_dir();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    Authority::load(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn export_returns_a_constrained_ca_certificate() {
    let (_tmp, dir) = ca_dir();
    let pem = export(&dir).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let params = CertificateParams::from_ca_cert_pem(&pem).unwrap();
    assert_eq!(params.is_ca, IsCa::Ca(BasicConstraints::Constrained(0)));
    assert_eq!(params.distinguished_name.get(&DnType::CommonName), Some(&"sluice egress CA".into()));
    assert!(params.key_usages.contains(&KeyUsagePurpose::KeyCertSign));
    let lifetime = params.not_after - params.not_before;
    assert!(lifetime > time::Duration::days(3649), "{lifetime}");
    let nc = params.name_constraints.unwrap();
    let permitted = dns_subtrees(&nc.permitted_subtrees);
    assert!(permitted.contains(&"api.openai.com".to_string()));
    assert!(permitted.contains(&"openai.azure.com".to_string()));
    assert!(permitted.contains(&"bedrock-runtime.eu-west-1.amazonaws.com".to_string()));
    assert!(!permitted.contains(&"amazonaws.com".to_string()));
    assert_eq!(nc.excluded_subtrees.len(), 2, "all IPv4 and IPv6 excluded");
}

#[test]
fn export_of_missing_ca_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = export(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn load_rejects_a_group_readable_key() {
    let (_tmp, dir) = ca_dir();
    let key = CaFiles::in_dir(&dir).key;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = Authority::load(&dir).unwrap_err();
    assert!(matches!(err, CaError::KeyPermissions { mode: 0o644, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("chmod 600") && msg.contains(&key.display().to_string()), "{msg}");

    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    Authority::load(&dir).unwrap();
}

#[test]
fn load_rejects_a_key_from_another_ca() {
    let (_tmp, dir) = ca_dir();
    let (_tmp2, other) = ca_dir();
    fs::copy(CaFiles::in_dir(&other).key, CaFiles::in_dir(&dir).key).unwrap();
    let err = Authority::load(&dir).unwrap_err();
    assert!(matches!(err, CaError::Unusable { .. }), "{err}");
}

#[test]
fn leaf_for_intercepted_host_verifies_against_the_ca() {
    let (_tmp, dir) = ca_dir();
    let cache = LeafCache::new(Authority::load(&dir).unwrap(), 16, DAY);
    for host in ["api.openai.com", "myres.openai.azure.com", "bedrock-runtime.us-east-1.amazonaws.com"] {
        let key = cache.certified_key(host).unwrap();
        assert_eq!(key.cert.len(), 1);
        verify_leaf(&ca_der(&dir), &key.cert[0], host).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    // The leaf is for its own host only.
    let key = cache.certified_key("api.openai.com").unwrap();
    assert!(verify_leaf(&ca_der(&dir), &key.cert[0], "myres.openai.azure.com").is_err());
}

#[test]
fn leaf_is_short_lived_and_backdated() {
    let (_tmp, dir) = ca_dir();
    let authority = Authority::load(&dir).unwrap();
    let now = OffsetDateTime::now_utc();
    let leaf = authority.mint("api.openai.com", DAY).unwrap();
    let params = CertificateParams::from_ca_cert_der(&leaf.key.cert[0]).unwrap();
    assert!(params.not_before <= now - time::Duration::minutes(4));
    let lifetime = params.not_after - now;
    assert!(lifetime <= time::Duration::hours(24) && lifetime > time::Duration::hours(23), "{lifetime}");
    assert!(leaf.renew_after > now + time::Duration::hours(17) && leaf.renew_after < now + time::Duration::hours(19));
}

/// The issue's acceptance test: a stolen key cannot mint a certificate a
/// standard verifier accepts for a host outside the constraints.
#[test]
fn leaf_outside_the_name_constraints_fails_standard_verification() {
    let (_tmp, dir) = ca_dir();
    let authority = Authority::load(&dir).unwrap();
    for host in ["www.bank.example", "amazonaws.com", "s3.us-east-1.amazonaws.com", "203.0.113.7"] {
        // Bypasses the permitted check, as an attacker holding the key would.
        let leaf = authority.mint(host, DAY).unwrap();
        let err = verify_leaf(&ca_der(&dir), &leaf.key.cert[0], host).unwrap_err();
        assert!(err.contains("NameConstraintViolation"), "{host}: {err}");
    }
    let cache = LeafCache::new(authority, 16, DAY);
    for host in ["www.bank.example", "203.0.113.7", "evilopenai.com"] {
        assert!(matches!(cache.certified_key(host), Err(CaError::NotPermitted(_))), "{host}");
    }
}

#[test]
fn openssl_rejects_leaf_outside_the_name_constraints() {
    let openssl_present = std::process::Command::new("openssl").arg("version").output().is_ok();
    if !openssl_present {
        eprintln!("openssl not installed; skipping");
        return;
    }
    let (tmp, dir) = ca_dir();
    let authority = Authority::load(&dir).unwrap();
    let verify = |host: &str| {
        let leaf = authority.mint(host, DAY).unwrap();
        let path = tmp.path().join(format!("{host}.der"));
        fs::write(&path, leaf.key.cert[0].as_ref()).unwrap();
        let pem_path = tmp.path().join(format!("{host}.pem"));
        let convert = std::process::Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in"])
            .arg(&path)
            .arg("-out")
            .arg(&pem_path)
            .status()
            .unwrap();
        assert!(convert.success());
        std::process::Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-verify_hostname", host, "-CAfile"])
            .arg(CaFiles::in_dir(&dir).cert)
            .arg(&pem_path)
            .output()
            .unwrap()
    };
    let ok = verify("api.openai.com");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout) + String::from_utf8_lossy(&ok.stderr));
    let bad = verify("www.bank.example");
    assert!(!bad.status.success());
    let out = String::from_utf8_lossy(&bad.stdout) + String::from_utf8_lossy(&bad.stderr);
    assert!(out.contains("subtree violation"), "{out}");
}

#[test]
fn cache_returns_the_same_key_until_renewal() {
    let (_tmp, dir) = ca_dir();
    let cache = LeafCache::new(Authority::load(&dir).unwrap(), 16, DAY);
    let first = cache.certified_key("api.openai.com").unwrap();
    let again = cache.certified_key("API.OpenAI.com.").unwrap();
    assert!(Arc::ptr_eq(&first, &again));

    cache.lock().map.get_mut("api.openai.com").unwrap().leaf.renew_after = OffsetDateTime::now_utc();
    let renewed = cache.certified_key("api.openai.com").unwrap();
    assert!(!Arc::ptr_eq(&first, &renewed));
}

#[test]
fn cache_evicts_the_least_recently_used_host() {
    let (_tmp, dir) = ca_dir();
    let cache = LeafCache::new(Authority::load(&dir).unwrap(), 2, DAY);
    let a = cache.certified_key("a.openai.azure.com").unwrap();
    let b = cache.certified_key("b.openai.azure.com").unwrap();
    cache.certified_key("a.openai.azure.com").unwrap();
    cache.certified_key("c.openai.azure.com").unwrap();
    assert_eq!(cache.lock().map.len(), 2);
    assert!(Arc::ptr_eq(&a, &cache.certified_key("a.openai.azure.com").unwrap()));
    assert!(!Arc::ptr_eq(&b, &cache.certified_key("b.openai.azure.com").unwrap()));
    assert_eq!(cache.lock().map.len(), 2);
}

#[test]
fn leaf_requests_are_counted() {
    let (_tmp, dir) = ca_dir();
    let cache = LeafCache::new(Authority::load(&dir).unwrap(), 16, DAY);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            cache.certified_key("api.openai.com").unwrap();
        }
    });
    let text = handle.render();
    assert!(text.contains("sluice_proxy_leaf_certs_total{outcome=\"minted\"} 1"), "{text}");
    assert!(text.contains("sluice_proxy_leaf_certs_total{outcome=\"cache_hit\"} 2"), "{text}");
}

#[test]
fn server_config_completes_a_handshake_with_alpn() {
    let (_tmp, dir) = ca_dir();
    let cache = LeafCache::new(Authority::load(&dir).unwrap(), 16, DAY);
    let server_config = cache.server_config("api.openai.com", &[b"h2".to_vec(), b"http/1.1".to_vec()]).unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(ca_der(&dir)).unwrap();
    let mut client_config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from("api.openai.com").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut server = rustls::ServerConnection::new(server_config).unwrap();

    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().unwrap();
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(server.server_name(), Some("api.openai.com"));
}

#[test]
fn uncovered_reports_patterns_added_after_init() {
    let (_tmp, dir) = ca_dir();
    let authority = Authority::load(&dir).unwrap();
    assert!(authority.covers("api.openai.com"));
    assert!(authority.covers("deep.sub.openai.azure.com"));
    assert!(!authority.covers("openai.com"));
    assert!(!authority.covers("bedrock-runtime.xx-nowhere-9.amazonaws.com"));

    let mut config = patterns();
    config.push("generativelanguage.googleapis.com".into());
    config.push("*.api.openai.com".into());
    config.push("api.*.example.com".into());
    assert_eq!(
        authority.uncovered(&config),
        vec!["generativelanguage.googleapis.com".to_string(), "api.*.example.com".to_string()]
    );
}

#[test]
fn unconstrained_ca_issues_for_any_host() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), &[], false).unwrap();
    let params = CertificateParams::from_ca_cert_pem(&export(tmp.path()).unwrap()).unwrap();
    assert_eq!(params.name_constraints, None);
    let cache = LeafCache::new(Authority::load(tmp.path()).unwrap(), 4, DAY);
    assert!(cache.authority().uncovered(&["api.*.example.com".to_string()]).is_empty());
    let key = cache.certified_key("www.bank.example").unwrap();
    verify_leaf(&ca_der(tmp.path()), &key.cert[0], "www.bank.example").unwrap();
}

#[test]
fn invalid_host_is_refused() {
    let (_tmp, dir) = ca_dir();
    let cache = LeafCache::new(Authority::load(&dir).unwrap(), 4, DAY);
    assert!(matches!(cache.certified_key("bad host.openai.azure.com"), Err(CaError::InvalidHost(_))));
    assert!(matches!(cache.certified_key(""), Err(CaError::InvalidHost(_))));
}

#[test]
fn host_matching() {
    assert!(host_matches("api.openai.com", "api.openai.com"));
    assert!(host_matches("api.openai.com", "API.OpenAI.COM."));
    assert!(!host_matches("api.openai.com", "xapi.openai.com"));
    assert!(!host_matches("api.openai.com", "eu.api.openai.com"));
    assert!(host_matches("*.openai.azure.com", "myres.openai.azure.com"));
    assert!(!host_matches("*.openai.azure.com", "openai.azure.com"));
    assert!(!host_matches("*.openai.azure.com", "a.b.openai.azure.com"));
    assert!(host_matches("bedrock-runtime.*.amazonaws.com", "bedrock-runtime.us-east-1.amazonaws.com"));
    assert!(!host_matches("bedrock-runtime.*.amazonaws.com", "bedrock-runtime.amazonaws.com"));
    assert!(!host_matches("bedrock-runtime.*.amazonaws.com", "bedrock.us-east-1.amazonaws.com"));
    assert!(!host_matches("*.openai.azure.com", ".openai.azure.com"));
}

#[test]
fn subtrees_are_exact_and_never_widened() {
    let subtrees = name_constraint_subtrees(&[
        "api.openai.com".into(),
        "*.openai.azure.com".into(),
        "bedrock-runtime.*.amazonaws.com".into(),
        "generativelanguage.googleapis.com".into(),
        "*.openai.com".into(),
        "Generativelanguage.Googleapis.com.".into(),
    ])
    .unwrap();
    // api.openai.com is inside openai.com, and duplicates collapse.
    assert!(!subtrees.contains(&"api.openai.com".to_string()));
    assert!(subtrees.contains(&"openai.com".to_string()));
    assert!(subtrees.contains(&"openai.azure.com".to_string()));
    assert_eq!(subtrees.iter().filter(|s| s.starts_with("generativelanguage")).count(), 1);
    let bedrock: Vec<_> = subtrees.iter().filter(|s| s.starts_with("bedrock-runtime.")).collect();
    assert_eq!(bedrock.len(), AWS_REGIONS.len());
    assert!(bedrock.contains(&&"bedrock-runtime.us-gov-west-1.amazonaws.com".to_string()));
    assert!(subtrees.iter().all(|s| !s.contains('*') && s != "amazonaws.com"));
    assert_eq!(subtrees.len(), 3 + AWS_REGIONS.len());

    for bad in ["api.*.example.com", "*", "a.*.*.amazonaws.com", "api-*.openai.com", "api..openai.com", "api.openai.*"]
    {
        let err = name_constraint_subtrees(&[bad.to_string()]).unwrap_err();
        assert!(matches!(err, CaError::Pattern { .. }), "{bad}");
    }
    assert!(name_constraint_subtrees(&[]).unwrap().is_empty());
}

#[test]
fn cache_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LeafCache>();
}

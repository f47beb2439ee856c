//! Certificate authority for the TLS-intercepting forward proxy.
//!
//! `sluice ca init` creates an ECDSA P-256 CA whose certificate carries X.509
//! name constraints limited to the intercepted domains, so a stolen CA key
//! cannot mint a certificate a client would accept for any other site. The
//! proxy loads it as an [`Authority`] and asks a [`LeafCache`] for a short-lived
//! leaf certificate per SNI host.
//!
//! Name constraints are built from the intercept patterns by
//! [`name_constraint_subtrees`]: `api.openai.com` stays exact, `*.openai.azure.com`
//! becomes the subtree `openai.azure.com`. A wildcard in the middle of a name
//! (`bedrock-runtime.*.amazonaws.com`) has no name-constraint form; rather than
//! widening it to `amazonaws.com`, it is expanded over [`AWS_REGIONS`]. A region
//! AWS opens later is not covered until it is added to that list and the CA is
//! re-created, or the host is listed explicitly. All IP addresses are excluded,
//! because DNS subtrees alone leave IP-address certificates unconstrained.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use time::OffsetDateTime;

/// Counter of leaf certificates handed out, labelled `outcome="minted"|"cache_hit"`.
pub const LEAF_CERTS_METRIC: &str = "sluice_proxy_leaf_certs_total";

/// Every public AWS region (and GovCloud) as of 2025; used to expand patterns
/// such as `bedrock-runtime.*.amazonaws.com` into exact names. Listing regions
/// where a service is not offered yet is harmless: the names still belong to AWS.
pub const AWS_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca.key";
const CA_COMMON_NAME: &str = "sluice egress CA";
const CA_ORGANIZATION: &str = "sluice";
const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Certificates start this far in the past so clients with a slightly slow
/// clock do not reject them as not yet valid.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Shorter leaves would expire between minting and a slow handshake.
const MIN_LEAF_VALIDITY: Duration = Duration::from_secs(10 * 60);
/// Host used to prove at load time that minted leaves chain to the CA file.
const PROBE_LABEL: &str = "sluice-probe";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} already exists; use --force to replace the CA (clients must then trust the new certificate)", .0.display())]
    Exists(PathBuf),
    #[error("CA key {} is readable by group or others (mode {mode:03o}); run: chmod 600 {}", path.display(), path.display())]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("CA in {} cannot issue certificates clients accept: {reason}", cert.display())]
    Unusable { cert: PathBuf, reason: String },
    #[error("intercept pattern {pattern:?} cannot be expressed as a name constraint: {reason}; list the hosts explicitly or set ca.name_constraints: false")]
    Pattern { pattern: String, reason: String },
    #[error("{0:?} is not a valid TLS server name")]
    InvalidHost(String),
    #[error("{0} is outside the CA's name constraints; no certificate minted")]
    NotPermitted(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the CA's certificate and private key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaFiles {
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }
}

/// Create a CA in `dir`. Name constraints are built from the `intercept`
/// patterns; an empty list creates an unconstrained CA. Refuses to replace an
/// existing CA unless `force`.
pub fn init(dir: &Path, intercept: &[String], force: bool) -> Result<CaFiles, CaError> {
    let files = CaFiles::in_dir(dir);
    let subtrees = name_constraint_subtrees(intercept)?;
    create_private_dir(dir)?;
    if !force {
        for path in [&files.key, &files.cert] {
            if path.exists() {
                return Err(CaError::Exists(path.clone()));
            }
        }
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    if !subtrees.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: subtrees.into_iter().map(GeneralSubtree::DnsName).collect(),
            excluded_subtrees: vec![
                GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
            ],
        });
    }
    let cert = params.self_signed(&key)?;

    // Both files are complete on disk before either is swapped in, so a crash
    // leaves the old pair or the new pair, not a half-written key.
    let key_tmp = write_new_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    let cert_tmp = match write_new_file(&files.cert, cert.pem().as_bytes(), 0o644) {
        Ok(tmp) => tmp,
        Err(e) => {
            let _ = fs::remove_file(&key_tmp);
            return Err(e);
        }
    };
    rename(&key_tmp, &files.key)?;
    rename(&cert_tmp, &files.cert)?;
    tracing::info!(cert = %files.cert.display(), "created CA");
    Ok(files)
}

/// The CA certificate in PEM, for clients' trust stores.
pub fn export(dir: &Path) -> Result<String, CaError> {
    let path = CaFiles::in_dir(dir).cert;
    let pem = read_to_string(&path)?;
    first_cert(&path, &pem)?;
    Ok(pem)
}

/// Name-constraint DNS subtrees for the intercept patterns, sorted, with
/// names already covered by a broader subtree left out.
pub fn name_constraint_subtrees(patterns: &[String]) -> Result<Vec<String>, CaError> {
    let mut all = Vec::new();
    for pattern in patterns {
        all.extend(pattern_subtrees(pattern)?);
    }
    all.sort();
    all.dedup();
    let kept = all
        .iter()
        .filter(|name| {
            !all.iter()
                .any(|other| other != *name && name.ends_with(&format!(".{other}")))
        })
        .cloned()
        .collect();
    Ok(kept)
}

/// Whether `host` matches an intercept `pattern`: case-insensitive, and a `*`
/// label matches exactly one label.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = normalize(pattern);
    let host = normalize(host);
    let mut p = pattern.split('.');
    let mut h = host.split('.');
    loop {
        match (p.next(), h.next()) {
            (None, None) => return true,
            (Some(pl), Some(hl)) => {
                if hl.is_empty() || (pl != "*" && pl != hl) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// A loaded CA, able to sign leaf certificates.
pub struct Authority {
    cert_path: PathBuf,
    cert_pem: String,
    /// Rebuilt from the CA file; rcgen takes the issuer name and key identifier from it.
    issuer: rcgen::Certificate,
    key: KeyPair,
    constraints: Option<Constraints>,
    not_after: OffsetDateTime,
}

/// The DNS part of the CA's name constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Constraints {
    permitted: Vec<String>,
    excluded: Vec<String>,
}

impl Authority {
    /// Load the CA from `dir`, refusing a key file others can read, and proving
    /// that a leaf it mints verifies against the certificate clients trust.
    /// A CA directory found looser than 0700 is tightened.
    pub fn load(dir: &Path) -> Result<Authority, CaError> {
        let files = CaFiles::in_dir(dir);
        if dir.is_dir() {
            create_private_dir(dir)?;
        }
        check_key_mode(&files.key)?;
        let key_pem = read_to_string(&files.key)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: files.key.clone(),
            reason: format!("not a usable private key: {e}"),
        })?;
        let cert_pem = read_to_string(&files.cert)?;
        let cert_der = first_cert(&files.cert, &cert_pem)?;
        let params =
            CertificateParams::from_ca_cert_der(&cert_der).map_err(|e| CaError::Invalid {
                path: files.cert.clone(),
                reason: format!("not a CA certificate: {e}"),
            })?;
        let not_after = params.not_after;
        let constraints = params.name_constraints.as_ref().map(|nc| Constraints {
            permitted: dns_subtrees(&nc.permitted_subtrees),
            excluded: dns_subtrees(&nc.excluded_subtrees),
        });
        let issuer = params.self_signed(&key)?;
        let authority = Authority {
            cert_path: files.cert.clone(),
            cert_pem,
            issuer,
            key,
            constraints,
            not_after,
        };
        let now = OffsetDateTime::now_utc();
        if not_after <= now + MIN_LEAF_VALIDITY {
            return Err(authority.unusable(format!(
                "the CA certificate expires at {not_after}; run sluice ca init --force"
            )));
        }
        if not_after <= now + time::Duration::days(30) {
            tracing::warn!(cert = %files.cert.display(), expires = %not_after, "CA certificate expires within 30 days");
        }
        authority.check_chain(&cert_der)?;
        Ok(authority)
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Whether the CA's name constraints allow a certificate for `host`.
    pub fn covers(&self, host: &str) -> bool {
        let Some(constraints) = &self.constraints else {
            return true;
        };
        let host = normalize(host);
        // Constrained CAs made here exclude every IP address.
        if host.parse::<IpAddr>().is_ok() {
            return false;
        }
        !constraints.excluded.iter().any(|s| in_subtree(&host, s))
            && constraints.permitted.iter().any(|s| in_subtree(&host, s))
    }

    /// The intercept patterns whose hosts this CA cannot issue for, e.g. when
    /// a host was added to the config after `sluice ca init`. Patterns that
    /// have no name-constraint form are reported too.
    pub fn uncovered(&self, patterns: &[String]) -> Vec<String> {
        if self.constraints.is_none() {
            return Vec::new();
        }
        patterns
            .iter()
            .filter(|pattern| match pattern_subtrees(pattern) {
                Ok(names) => !names.iter().all(|name| self.covers(name)),
                Err(_) => true,
            })
            .cloned()
            .collect()
    }

    /// Sign a leaf for `host` without checking the name constraints; callers
    /// check [`Authority::covers`] first.
    fn mint(&self, host: &str, validity: Duration) -> Result<Leaf, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let not_after = time::Duration::try_from(validity)
            .ok()
            .and_then(|d| now.checked_add(d))
            .map_or(self.not_after, |t| t.min(self.not_after));
        params.not_before = now - CLOCK_SKEW;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key_der)?;
        // Renew with a quarter of the lifetime left, so no client is handed a
        // certificate that is about to expire.
        let renew_after = now + (not_after - now) * 3 / 4;
        Ok(Leaf {
            key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)),
            renew_after,
        })
    }

    /// Mint a probe leaf and verify it the way a client would, which catches a
    /// key that does not belong to the certificate or a name that rcgen did not
    /// re-encode byte for byte.
    fn check_chain(&self, ca_der: &CertificateDer<'static>) -> Result<(), CaError> {
        let host = self.probe_host();
        let leaf = self.mint(&host, MIN_LEAF_VALIDITY)?;
        verify_leaf(ca_der, &leaf.key.cert[0], &host).map_err(|reason| self.unusable(reason))
    }

    fn probe_host(&self) -> String {
        let permitted = self.constraints.as_ref().and_then(|c| c.permitted.first());
        match permitted {
            Some(base) => format!("{PROBE_LABEL}.{}", base.trim_start_matches('.')),
            None => format!("{PROBE_LABEL}.invalid"),
        }
    }

    fn unusable(&self, reason: String) -> CaError {
        CaError::Unusable {
            cert: self.cert_path.clone(),
            reason,
        }
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hand-written so the private key can never end up in a log line.
        f.debug_struct("Authority")
            .field("cert", &self.cert_path)
            .field("constraints", &self.constraints)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

struct Leaf {
    key: Arc<CertifiedKey>,
    renew_after: OffsetDateTime,
}

struct Slot {
    leaf: Leaf,
    last_used: u64,
}

#[derive(Default)]
struct Slots {
    map: HashMap<String, Slot>,
    tick: u64,
}

/// Leaf certificates per SNI host, least recently used evicted past `capacity`.
pub struct LeafCache {
    authority: Authority,
    capacity: usize,
    validity: Duration,
    slots: Mutex<Slots>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl LeafCache {
    /// `validity` is the leaf lifetime (at least ten minutes); `capacity` the
    /// number of hosts kept (at least one).
    pub fn new(authority: Authority, capacity: usize, validity: Duration) -> LeafCache {
        let capacity = capacity.max(1);
        LeafCache {
            authority,
            capacity,
            validity: validity.max(MIN_LEAF_VALIDITY),
            slots: Mutex::new(Slots::default()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            // Shared by every host's config; rustls only resumes a session
            // under the SNI it was made for.
            sessions: ServerSessionMemoryCache::new(capacity.saturating_mul(4)),
        }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The certificate and key for `host`, cached or freshly minted.
    pub fn certified_key(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = normalize(host);
        if ServerName::try_from(host.as_str()).is_err() {
            return Err(CaError::InvalidHost(host));
        }
        if !self.authority.covers(&host) {
            return Err(CaError::NotPermitted(host));
        }
        let now = OffsetDateTime::now_utc();
        {
            let mut slots = self.lock();
            slots.tick += 1;
            let tick = slots.tick;
            if let Some(slot) = slots.map.get_mut(&host) {
                if now < slot.leaf.renew_after {
                    slot.last_used = tick;
                    metrics::counter!(LEAF_CERTS_METRIC, "outcome" => "cache_hit").increment(1);
                    return Ok(slot.leaf.key.clone());
                }
            }
        }
        // Minted outside the lock so one slow key generation does not stall
        // handshakes for other hosts; two racing misses both mint, harmlessly.
        let leaf = self.authority.mint(&host, self.validity)?;
        let key = leaf.key.clone();
        metrics::counter!(LEAF_CERTS_METRIC, "outcome" => "minted").increment(1);
        tracing::debug!(host = %host, "minted leaf certificate");
        let mut slots = self.lock();
        slots.tick += 1;
        let tick = slots.tick;
        if !slots.map.contains_key(&host) && slots.map.len() >= self.capacity {
            let oldest = slots
                .map
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                slots.map.remove(&oldest);
            }
        }
        slots.map.insert(
            host,
            Slot {
                leaf,
                last_used: tick,
            },
        );
        Ok(key)
    }

    /// A server config presenting `host`'s leaf and offering `alpn`.
    pub fn server_config(
        &self,
        host: &str,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<ServerConfig>, CaError> {
        let key = self.certified_key(host)?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
        config.alpn_protocols = alpn.to_vec();
        config.session_storage = self.sessions.clone();
        Ok(Arc::new(config))
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every update leaves the map consistent, so a panic elsewhere while
        // holding the lock does not make its contents wrong.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("authority", &self.authority)
            .field("capacity", &self.capacity)
            .field("validity", &self.validity)
            .field("cached", &self.lock().map.len())
            .finish_non_exhaustive()
    }
}

fn ca_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, CA_ORGANIZATION);
    name
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// RFC 5280 DNS constraint match: `example.com` covers itself and every
/// subdomain; `.example.com` covers subdomains only.
fn in_subtree(host: &str, subtree: &str) -> bool {
    let subtree = subtree.to_ascii_lowercase();
    if subtree.is_empty() {
        return true;
    }
    if subtree.starts_with('.') {
        return host.ends_with(&subtree);
    }
    host == subtree || host.ends_with(&format!(".{subtree}"))
}

fn dns_subtrees(subtrees: &[GeneralSubtree]) -> Vec<String> {
    subtrees
        .iter()
        .filter_map(|s| match s {
            GeneralSubtree::DnsName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The exact DNS subtrees one intercept pattern needs.
fn pattern_subtrees(pattern: &str) -> Result<Vec<String>, CaError> {
    let fail = |reason: &str| CaError::Pattern {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    let name = normalize(pattern);
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err(fail("empty label"));
    }
    if labels.iter().any(|l| l.contains('*') && *l != "*") {
        return Err(fail("`*` must be a whole label"));
    }
    let stars: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == "*").collect();
    let subtrees = match stars.as_slice() {
        [] => vec![name.clone()],
        [0] if labels.len() == 1 => return Err(fail("`*` alone would permit every name")),
        [0] => vec![labels[1..].join(".")],
        [i] if labels[i + 1..] == ["amazonaws", "com"] => {
            let prefix = labels[..*i].join(".");
            AWS_REGIONS
                .iter()
                .map(|region| format!("{prefix}.{region}.amazonaws.com"))
                .collect()
        }
        [_] => {
            return Err(fail(
                "a `*` inside a name is only expanded for <service>.*.amazonaws.com",
            ))
        }
        _ => return Err(fail("more than one `*`")),
    };
    for subtree in &subtrees {
        if ServerName::try_from(subtree.as_str()).is_err() {
            return Err(fail("not a valid DNS name"));
        }
    }
    Ok(subtrees)
}

fn verify_leaf(
    ca_der: &CertificateDer<'static>,
    leaf_der: &CertificateDer<'static>,
    host: &str,
) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf_der, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    let invalid = |reason: String| CaError::Invalid {
        path: path.to_owned(),
        reason,
    };
    match rustls_pemfile::certs(&mut pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(invalid(format!("bad PEM: {e}"))),
        None => Err(invalid("no CERTIFICATE block".to_owned())),
    }
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), CaError> {
    fs::rename(from, to).map_err(|source| CaError::Io {
        path: to.to_owned(),
        source,
    })
}

/// 0700, also when the directory existed looser before.
fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    crate::private_dir::create(dir).map_err(|source| CaError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Write `contents` to a fresh temporary file next to `path`, created with
/// `mode` so the key is never readable by others, even briefly.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, CaError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let tmp = path.with_file_name(format!(".{file_name}.{}.{nanos}.tmp", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    match result {
        Ok(()) => Ok(tmp),
        Err(source) => {
            let _ = fs::remove_file(&tmp);
            Err(CaError::Io { path: tmp, source })
        }
    }
}

#[cfg(unix)]
fn check_key_mode(path: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_mode(_path: &Path) -> Result<(), CaError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn patterns() -> Vec<String> {
        [
            "api.openai.com",
            "*.openai.azure.com",
            "bedrock-runtime.*.amazonaws.com",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
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
        assert!(
            matches!(err, CaError::Exists(ref p) if *p == files.key),
            "{err}"
        );
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
        assert_eq!(
            params.distinguished_name.get(&DnType::CommonName),
            Some(&"sluice egress CA".into())
        );
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
        assert!(
            matches!(err, CaError::KeyPermissions { mode: 0o644, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && msg.contains(&key.display().to_string()),
            "{msg}"
        );

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
        for host in [
            "api.openai.com",
            "myres.openai.azure.com",
            "bedrock-runtime.us-east-1.amazonaws.com",
        ] {
            let key = cache.certified_key(host).unwrap();
            assert_eq!(key.cert.len(), 1);
            verify_leaf(&ca_der(&dir), &key.cert[0], host)
                .unwrap_or_else(|e| panic!("{host}: {e}"));
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
        assert!(
            lifetime <= time::Duration::hours(24) && lifetime > time::Duration::hours(23),
            "{lifetime}"
        );
        assert!(
            leaf.renew_after > now + time::Duration::hours(17)
                && leaf.renew_after < now + time::Duration::hours(19)
        );
    }

    /// The issue's acceptance test: a stolen key cannot mint a certificate a
    /// standard verifier accepts for a host outside the constraints.
    #[test]
    fn leaf_outside_the_name_constraints_fails_standard_verification() {
        let (_tmp, dir) = ca_dir();
        let authority = Authority::load(&dir).unwrap();
        for host in [
            "www.bank.example",
            "amazonaws.com",
            "s3.us-east-1.amazonaws.com",
            "203.0.113.7",
        ] {
            // Bypasses the permitted check, as an attacker holding the key would.
            let leaf = authority.mint(host, DAY).unwrap();
            let err = verify_leaf(&ca_der(&dir), &leaf.key.cert[0], host).unwrap_err();
            assert!(err.contains("NameConstraintViolation"), "{host}: {err}");
        }
        let cache = LeafCache::new(authority, 16, DAY);
        for host in ["www.bank.example", "203.0.113.7", "evilopenai.com"] {
            assert!(
                matches!(cache.certified_key(host), Err(CaError::NotPermitted(_))),
                "{host}"
            );
        }
    }

    #[test]
    fn openssl_rejects_leaf_outside_the_name_constraints() {
        let openssl_present = std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_ok();
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
                .args([
                    "verify",
                    "-purpose",
                    "sslserver",
                    "-verify_hostname",
                    host,
                    "-CAfile",
                ])
                .arg(CaFiles::in_dir(&dir).cert)
                .arg(&pem_path)
                .output()
                .unwrap()
        };
        let ok = verify("api.openai.com");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stdout) + String::from_utf8_lossy(&ok.stderr)
        );
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

        cache
            .lock()
            .map
            .get_mut("api.openai.com")
            .unwrap()
            .leaf
            .renew_after = OffsetDateTime::now_utc();
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
        assert!(Arc::ptr_eq(
            &a,
            &cache.certified_key("a.openai.azure.com").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &b,
            &cache.certified_key("b.openai.azure.com").unwrap()
        ));
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
        assert!(
            text.contains("sluice_proxy_leaf_certs_total{outcome=\"minted\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_proxy_leaf_certs_total{outcome=\"cache_hit\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn server_config_completes_a_handshake_with_alpn() {
        let (_tmp, dir) = ca_dir();
        let cache = LeafCache::new(Authority::load(&dir).unwrap(), 16, DAY);
        let server_config = cache
            .server_config("api.openai.com", &[b"h2".to_vec(), b"http/1.1".to_vec()])
            .unwrap();

        let mut roots = RootCertStore::empty();
        roots.add(ca_der(&dir)).unwrap();
        let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
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
            vec![
                "generativelanguage.googleapis.com".to_string(),
                "api.*.example.com".to_string()
            ]
        );
    }

    #[test]
    fn unconstrained_ca_issues_for_any_host() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &[], false).unwrap();
        let params = CertificateParams::from_ca_cert_pem(&export(tmp.path()).unwrap()).unwrap();
        assert_eq!(params.name_constraints, None);
        let cache = LeafCache::new(Authority::load(tmp.path()).unwrap(), 4, DAY);
        assert!(cache
            .authority()
            .uncovered(&["api.*.example.com".to_string()])
            .is_empty());
        let key = cache.certified_key("www.bank.example").unwrap();
        verify_leaf(&ca_der(tmp.path()), &key.cert[0], "www.bank.example").unwrap();
    }

    #[test]
    fn invalid_host_is_refused() {
        let (_tmp, dir) = ca_dir();
        let cache = LeafCache::new(Authority::load(&dir).unwrap(), 4, DAY);
        assert!(matches!(
            cache.certified_key("bad host.openai.azure.com"),
            Err(CaError::InvalidHost(_))
        ));
        assert!(matches!(
            cache.certified_key(""),
            Err(CaError::InvalidHost(_))
        ));
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
        assert!(host_matches(
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime.us-east-1.amazonaws.com"
        ));
        assert!(!host_matches(
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime.amazonaws.com"
        ));
        assert!(!host_matches(
            "bedrock-runtime.*.amazonaws.com",
            "bedrock.us-east-1.amazonaws.com"
        ));
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
        assert_eq!(
            subtrees
                .iter()
                .filter(|s| s.starts_with("generativelanguage"))
                .count(),
            1
        );
        let bedrock: Vec<_> = subtrees
            .iter()
            .filter(|s| s.starts_with("bedrock-runtime."))
            .collect();
        assert_eq!(bedrock.len(), AWS_REGIONS.len());
        assert!(bedrock.contains(&&"bedrock-runtime.us-gov-west-1.amazonaws.com".to_string()));
        assert!(subtrees
            .iter()
            .all(|s| !s.contains('*') && s != "amazonaws.com"));
        assert_eq!(subtrees.len(), 3 + AWS_REGIONS.len());

        for bad in [
            "api.*.example.com",
            "*",
            "a.*.*.amazonaws.com",
            "api-*.openai.com",
            "api..openai.com",
            "api.openai.*",
        ] {
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
}

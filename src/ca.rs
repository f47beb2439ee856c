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
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints, PKCS_ECDSA_P256_SHA256,
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
        CaFiles { cert: dir.join(CERT_FILE), key: dir.join(KEY_FILE) }
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
        .filter(|name| !all.iter().any(|other| other != *name && name.ends_with(&format!(".{other}"))))
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
        let params = CertificateParams::from_ca_cert_der(&cert_der)
            .map_err(|e| CaError::Invalid { path: files.cert.clone(), reason: format!("not a CA certificate: {e}") })?;
        let not_after = params.not_after;
        let constraints = params.name_constraints.as_ref().map(|nc| Constraints {
            permitted: dns_subtrees(&nc.permitted_subtrees),
            excluded: dns_subtrees(&nc.excluded_subtrees),
        });
        let issuer = params.self_signed(&key)?;
        let authority = Authority { cert_path: files.cert.clone(), cert_pem, issuer, key, constraints, not_after };
        let now = OffsetDateTime::now_utc();
        if not_after <= now + MIN_LEAF_VALIDITY {
            return Err(
                authority.unusable(format!("the CA certificate expires at {not_after}; run sluice ca init --force"))
            );
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
        Ok(Leaf { key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)), renew_after })
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
        CaError::Unusable { cert: self.cert_path.clone(), reason }
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
            let oldest = slots.map.iter().min_by_key(|(_, slot)| slot.last_used).map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                slots.map.remove(&oldest);
            }
        }
        slots.map.insert(host, Slot { leaf, last_used: tick });
        Ok(key)
    }

    /// A server config presenting `host`'s leaf and offering `alpn`.
    pub fn server_config(&self, host: &str, alpn: &[Vec<u8>]) -> Result<Arc<ServerConfig>, CaError> {
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
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    let fail = |reason: &str| CaError::Pattern { pattern: pattern.to_owned(), reason: reason.to_owned() };
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
            AWS_REGIONS.iter().map(|region| format!("{prefix}.{region}.amazonaws.com")).collect()
        }
        [_] => return Err(fail("a `*` inside a name is only expanded for <service>.*.amazonaws.com")),
        _ => return Err(fail("more than one `*`")),
    };
    for subtree in &subtrees {
        if ServerName::try_from(subtree.as_str()).is_err() {
            return Err(fail("not a valid DNS name"));
        }
    }
    Ok(subtrees)
}

fn verify_leaf(ca_der: &CertificateDer<'static>, leaf_der: &CertificateDer<'static>, host: &str) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    verifier.verify_server_cert(leaf_der, &[], &name, &[], UnixTime::now()).map(|_| ()).map_err(|e| format!("{e:?}"))
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    let invalid = |reason: String| CaError::Invalid { path: path.to_owned(), reason };
    match rustls_pemfile::certs(&mut pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(invalid(format!("bad PEM: {e}"))),
        None => Err(invalid("no CERTIFICATE block".to_owned())),
    }
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

fn rename(from: &Path, to: &Path) -> Result<(), CaError> {
    fs::rename(from, to).map_err(|source| CaError::Io { path: to.to_owned(), source })
}

/// 0700, also when the directory existed looser before.
fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    crate::private_dir::create(dir).map_err(|source| CaError::Io { path: dir.to_owned(), source })
}

/// Write `contents` to a fresh temporary file next to `path`, created with
/// `mode` so the key is never readable by others, even briefly.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, CaError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
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
    let meta = fs::metadata(path).map_err(|source| CaError::Io { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_mode(_path: &Path) -> Result<(), CaError> {
    Ok(())
}

#[cfg(test)]
mod tests;

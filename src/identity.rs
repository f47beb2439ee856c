//! Identify: who is asking, as (team, user). In order of precedence:
//!
//! 1. a **sluice token**: the API key or `x-sluice-token` at the gateway,
//!    the `Proxy-Authorization` credential at the forward proxy;
//! 2. the **user header of a trusted proxy** (`identity.trusted_proxies`):
//!    an authenticating proxy in front of sluice names the user (and
//!    perhaps the team); honoured only on connections from its addresses,
//!    ignored from anyone else, and never forwarded upstream;
//! 3. the caller's **network** (`identity.networks`): the longest prefix
//!    containing the source address names the team;
//! 4. the **anonymous team**, when there is one; otherwise the caller is
//!    refused (401 at the gateway, 407 at the proxy).
//!
//! Tokens are kept only as SHA-256 digests, in config and in memory, so a
//! leaked config or core dump does not leak usable tokens.

use std::collections::HashMap;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use crate::config::IdentityConfig;
use crate::net::Cidr;
use crate::wire::Identity;

/// Longest user name taken from a trusted proxy's header.
const MAX_USER_LEN: usize = 256;
/// Longest team name taken from a trusted proxy's header.
const MAX_TEAM_LEN: usize = 64;

pub struct IdentityTable {
    by_digest: HashMap<[u8; 32], Identity>,
    anonymous_team: Option<String>,
    /// Most specific (longest prefix) first, so the first match wins.
    networks: Vec<Network>,
    trusted: Option<TrustedProxy>,
}

struct Network {
    cidr: Cidr,
    team: String,
    user: Option<String>,
}

struct TrustedProxy {
    from: Vec<Cidr>,
    user_header: HeaderName,
    team_header: Option<HeaderName>,
}

/// How a caller was named; the variants are in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Token,
    TrustedHeader,
    Network,
    Anonymous,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Token => "token",
            Source::TrustedHeader => "trusted_header",
            Source::Network => "network",
            Source::Anonymous => "anonymous",
        }
    }
}

/// An identified caller at the gateway.
#[derive(Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    pub identity: Identity,
    pub source: Source,
    /// The API key the client sent when it was not the sluice token
    /// (perhaps its own provider key).
    pub own_key: Option<&'a str>,
}

/// Why a caller cannot be identified.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("Invalid sluice token")]
    InvalidToken,
    #[error("Missing sluice token: send it as the API key (Authorization: Bearer or x-api-key)")]
    MissingToken,
    #[error("invalid sluice proxy credentials")]
    InvalidProxyCredentials,
    #[error("sluice proxy requires authentication: Proxy-Authorization: Basic user:token")]
    MissingProxyCredentials,
    /// The trusted proxy sent a header sluice cannot use; the name is the
    /// configured header's, never the value.
    #[error("the trusted proxy's `{header}` header is not a usable {what}")]
    BadHeader { header: String, what: &'static str },
    #[error("the trusted proxy named a user but no team: set its team header, identity.networks or an anonymous team")]
    NoTeam,
}

impl IdentityTable {
    pub fn new(cfg: &IdentityConfig) -> IdentityTable {
        let mut by_digest = HashMap::new();
        for t in &cfg.tokens {
            let mut digest = [0u8; 32];
            // Config validation guarantees 64 hex characters.
            if hex::decode_to_slice(&t.sha256, &mut digest).is_ok() {
                by_digest.insert(digest, Identity { team: t.team.clone(), user: t.user.clone() });
            }
        }
        // Config validation has rejected unparsable blocks and header names.
        let mut networks: Vec<Network> = cfg
            .networks
            .iter()
            .filter_map(|n| Some(Network { cidr: Cidr::parse(&n.cidr)?, team: n.team.clone(), user: n.user.clone() }))
            .collect();
        // Stable: among equal prefixes the first listed wins.
        networks.sort_by_key(|n| std::cmp::Reverse(n.cidr.prefix_len()));
        let trusted = cfg.trusted_proxies.as_ref().and_then(|t| {
            Some(TrustedProxy {
                from: t.from.iter().filter_map(|c| Cidr::parse(c)).collect(),
                user_header: HeaderName::from_bytes(t.user_header.as_bytes()).ok()?,
                team_header: t.team_header.as_ref().and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            })
        });
        IdentityTable { by_digest, anonymous_team: cfg.anonymous_team.clone(), networks, trusted }
    }

    /// The caller at the gateway, from `peer`, by the order of precedence.
    pub fn identify<'a>(&self, headers: &'a HeaderMap, peer: IpAddr) -> Result<Caller<'a>, IdentifyError> {
        let key = api_key(headers);
        // An explicit sluice token header wins, so a client can send its own
        // provider key as the API key and still be identified.
        let header_token = headers.get("x-sluice-token").and_then(|v| v.to_str().ok());
        let (token, own_key) = match header_token {
            Some(t) => (Some(t), key),
            None => (key, None),
        };
        if let Some(identity) = token.and_then(|t| self.lookup(t)) {
            return Ok(Caller { identity: identity.clone(), source: Source::Token, own_key });
        }
        match self.without_token(headers, peer)? {
            Some((identity, source)) => Ok(Caller { identity, source, own_key: key }),
            None if token.is_some() => Err(IdentifyError::InvalidToken),
            None => Err(IdentifyError::MissingToken),
        }
    }

    /// The caller at the forward proxy: the token in `Proxy-Authorization`
    /// (`Basic`, as password or as user name with an empty password, or
    /// `Bearer`), then the trusted header, network and anonymous team.
    pub fn identify_proxy(&self, headers: &HeaderMap, peer: IpAddr) -> Result<(Identity, Source), IdentifyError> {
        let given = headers.get(http::header::PROXY_AUTHORIZATION);
        let token = given.and_then(|v| v.to_str().ok()).and_then(proxy_token);
        if let Some(identity) = token.as_deref().and_then(|t| self.lookup(t)) {
            return Ok((identity.clone(), Source::Token));
        }
        match self.without_token(headers, peer)? {
            Some(found) => Ok(found),
            None if given.is_some() => Err(IdentifyError::InvalidProxyCredentials),
            None => Err(IdentifyError::MissingProxyCredentials),
        }
    }

    /// Steps 2 to 4: trusted header, network, anonymous team.
    fn without_token(&self, headers: &HeaderMap, peer: IpAddr) -> Result<Option<(Identity, Source)>, IdentifyError> {
        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        let network = self.networks.iter().find(|n| n.cidr.contains(peer));
        if let Some(proxy) = self.trusted.as_ref().filter(|t| t.from.iter().any(|c| c.contains(peer))) {
            if let Some(user) = proxy.user(headers)? {
                let team = match proxy.team(headers)? {
                    Some(team) => team,
                    None => network
                        .map(|n| n.team.clone())
                        .or_else(|| self.anonymous_team.clone())
                        .ok_or(IdentifyError::NoTeam)?,
                };
                return Ok(Some((Identity { team, user }, Source::TrustedHeader)));
            }
        }
        if let Some(n) = network {
            let user = n.user.clone().unwrap_or_else(|| peer.to_string());
            return Ok(Some((Identity { team: n.team.clone(), user }, Source::Network)));
        }
        Ok(self.anonymous().map(|identity| (identity, Source::Anonymous)))
    }

    pub fn lookup(&self, token: &str) -> Option<&Identity> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_digest.get(&digest)
    }

    pub fn anonymous(&self) -> Option<Identity> {
        self.anonymous_team.as_ref().map(|team| Identity { team: team.clone(), user: "anonymous".to_string() })
    }

    /// Every team the identity config names (team headers may name others).
    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.by_digest
            .values()
            .map(|i| i.team.as_str())
            .chain(self.networks.iter().map(|n| n.team.as_str()))
            .chain(self.anonymous_team.as_deref())
    }

    /// Remove the trusted proxy's identity headers: they are meant for
    /// sluice, and a provider has no business with the user's name.
    pub fn strip_identity_headers(&self, headers: &mut HeaderMap) {
        if let Some(t) = &self.trusted {
            headers.remove(&t.user_header);
            if let Some(team) = &t.team_header {
                headers.remove(team);
            }
        }
    }

    /// Whether `name` is one of the trusted proxy's identity headers.
    pub fn is_identity_header(&self, name: &HeaderName) -> bool {
        self.trusted.as_ref().is_some_and(|t| t.user_header == name || t.team_header.as_ref() == Some(name))
    }
}

impl TrustedProxy {
    fn user(&self, headers: &HeaderMap) -> Result<Option<String>, IdentifyError> {
        let Some(value) = headers.get(&self.user_header) else {
            return Ok(None);
        };
        let bad = || IdentifyError::BadHeader { header: self.user_header.to_string(), what: "user name" };
        // UTF-8 names are fine; control characters and blanks are not.
        let user = std::str::from_utf8(value.as_bytes()).map_err(|_| bad())?.trim();
        if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
            return Err(bad());
        }
        Ok(Some(user.to_string()))
    }

    fn team(&self, headers: &HeaderMap) -> Result<Option<String>, IdentifyError> {
        let Some(name) = &self.team_header else {
            return Ok(None);
        };
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        let team = value.to_str().map(str::trim).unwrap_or("");
        // Teams become metric labels and file names: only plain names.
        if team.len() > MAX_TEAM_LEN || !is_team_name(team) {
            return Err(IdentifyError::BadHeader { header: name.to_string(), what: "team name (a-z, 0-9, `_`, `-`)" });
        }
        Ok(Some(team.to_string()))
    }
}

/// Team names are policy file names: a-z, 0-9, `_` and `-`.
pub fn is_team_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether a configured identity header name is usable: a valid,
/// lower-case header name that is not a credential or hop header.
pub fn check_identity_header(name: &str) -> Result<(), String> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))?;
    if parsed.as_str() != name {
        return Err(format!("write `{}` in lower case", parsed.as_str()));
    }
    let reserved = crate::headers::HOP_BY_HOP
        .iter()
        .chain(crate::headers::PROXY_CREDENTIALS)
        .chain(crate::headers::PROVIDER_CREDENTIALS)
        .chain(&["host", "content-length", "content-type", "content-encoding"]);
    for r in reserved {
        if *r == name {
            return Err(format!("`{name}` has another meaning; pick a header of its own"));
        }
    }
    Ok(())
}

/// `Authorization: Bearer X` (OpenAI), `x-api-key: X` (Anthropic) or
/// `x-goog-api-key: X` (Gemini).
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim());
        }
    }
    headers
        .get("x-api-key")
        .or_else(|| headers.get("x-goog-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token in a proxy credential: a `Basic` credential's password, or
/// its user name when the password is empty (some clients put the token
/// there), or a `Bearer` token.
fn proxy_token(value: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = encoded.trim();
        return (!token.is_empty()).then(|| token.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    let token = if password.is_empty() { user } else { password };
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NetworkEntry, TokenEntry, TrustedProxies};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn proxy_credentials() {
        // "alice:slk-1" and "slk-2:" (token as user name, as some clients send it)
        assert_eq!(proxy_token("Basic YWxpY2U6c2xrLTE="), Some("slk-1".into()));
        assert_eq!(proxy_token("basic c2xrLTI6"), Some("slk-2".into()));
        assert_eq!(proxy_token("Bearer slk-3"), Some("slk-3".into()));
        assert_eq!(proxy_token("Digest abc"), None);
        assert_eq!(proxy_token("Basic !!!"), None);
        assert_eq!(proxy_token("Basic Og=="), None); // ":"
    }

    fn config(anon: Option<&str>) -> IdentityConfig {
        IdentityConfig {
            anonymous_team: anon.map(String::from),
            tokens: vec![TokenEntry { sha256: hash_token("slk-alice"), team: "payments".into(), user: "alice".into() }],
            networks: Vec::new(),
            trusted_proxies: None,
        }
    }

    fn table(anon: Option<&str>) -> IdentityTable {
        IdentityTable::new(&config(anon))
    }

    /// Networks 10.0.0.0/8 → corp, 10.20.0.0/16 → payments, fd00:20::/32 →
    /// payments (user "lab"); a trusted proxy at 10.9.9.9 and ::1.
    fn networked(anon: Option<&str>, team_header: bool) -> IdentityTable {
        let mut cfg = config(anon);
        cfg.networks = vec![
            NetworkEntry { cidr: "10.0.0.0/8".into(), team: "corp".into(), user: None },
            NetworkEntry { cidr: "10.20.0.0/16".into(), team: "payments".into(), user: None },
            NetworkEntry { cidr: "fd00:20::/32".into(), team: "payments".into(), user: Some("lab".into()) },
        ];
        cfg.trusted_proxies = Some(TrustedProxies {
            from: vec!["10.9.9.9/32".into(), "::1".into()],
            user_header: "x-forwarded-user".into(),
            team_header: team_header.then(|| "x-forwarded-team".into()),
        });
        IdentityTable::new(&cfg)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn who(t: &IdentityTable, h: &HeaderMap, peer: &str) -> (String, String, Source) {
        let c = t.identify(h, ip(peer)).unwrap();
        (c.identity.team, c.identity.user, c.source)
    }

    #[test]
    fn bearer_and_x_api_key_identify() {
        let t = table(None);
        let h = headers(&[("authorization", "Bearer slk-alice")]);
        assert_eq!(
            t.identify(&h, ip("127.0.0.1")),
            Ok(Caller {
                identity: Identity { team: "payments".into(), user: "alice".into() },
                source: Source::Token,
                own_key: None
            })
        );
        let h = headers(&[("x-api-key", "slk-alice")]);
        assert!(matches!(t.identify(&h, ip("127.0.0.1")), Ok(Caller { own_key: None, source: Source::Token, .. })));
    }

    #[test]
    fn own_key_with_sluice_token_header() {
        let t = table(None);
        let mut h = headers(&[("authorization", "Bearer sk-client-own")]);
        assert_eq!(t.identify(&h, ip("127.0.0.1")), Err(IdentifyError::InvalidToken));
        assert_eq!(table(Some("default")).identify(&h, ip("127.0.0.1")).unwrap().own_key, Some("sk-client-own"));
        h.insert("x-sluice-token", "slk-alice".parse().unwrap());
        assert!(matches!(t.identify(&h, ip("127.0.0.1")), Ok(Caller { own_key: Some("sk-client-own"), .. })));
        assert_eq!(t.identify(&HeaderMap::new(), ip("127.0.0.1")), Err(IdentifyError::MissingToken));
    }

    #[test]
    fn anonymous_team() {
        assert_eq!(table(None).anonymous(), None);
        assert_eq!(table(Some("default")).anonymous().unwrap().team, "default");
        let t = table(Some("default"));
        assert_eq!(who(&t, &HeaderMap::new(), "192.0.2.1"), ("default".into(), "anonymous".into(), Source::Anonymous));
    }

    #[test]
    fn longest_prefix_wins_in_v4_and_v6() {
        let t = networked(None, false);
        let none = HeaderMap::new();
        assert_eq!(who(&t, &none, "10.20.3.4"), ("payments".into(), "10.20.3.4".into(), Source::Network));
        assert_eq!(who(&t, &none, "10.21.3.4"), ("corp".into(), "10.21.3.4".into(), Source::Network));
        assert_eq!(who(&t, &none, "fd00:20::7"), ("payments".into(), "lab".into(), Source::Network));
        // An IPv4 client of a dual-stack listener.
        assert_eq!(who(&t, &none, "::ffff:10.20.0.1").0, "payments");
        assert_eq!(t.identify(&none, ip("192.0.2.1")), Err(IdentifyError::MissingToken));
    }

    #[test]
    fn trusted_header_only_from_the_trusted_proxy() {
        let t = networked(Some("default"), true);
        let h = headers(&[("x-forwarded-user", "bob@example.com"), ("x-forwarded-team", "payments")]);
        assert_eq!(who(&t, &h, "10.9.9.9"), ("payments".into(), "bob@example.com".into(), Source::TrustedHeader));
        assert_eq!(who(&t, &h, "::1").1, "bob@example.com");
        // Anyone else's header is ignored: their network decides.
        assert_eq!(who(&t, &h, "10.20.1.1"), ("payments".into(), "10.20.1.1".into(), Source::Network));
        assert_eq!(who(&t, &h, "192.0.2.1"), ("default".into(), "anonymous".into(), Source::Anonymous));
        // A token still wins over the header.
        let mut with_token = h.clone();
        with_token.insert("authorization", "Bearer slk-alice".parse().unwrap());
        assert_eq!(who(&t, &with_token, "10.9.9.9").2, Source::Token);
    }

    #[test]
    fn trusted_user_without_team_header_takes_the_network_team_then_anonymous() {
        let t = networked(Some("default"), false);
        let h = headers(&[("x-forwarded-user", "bob"), ("x-forwarded-team", "payments")]);
        // 10.9.9.9 is in 10.0.0.0/8 (corp); the team header is not configured.
        assert_eq!(who(&t, &h, "10.9.9.9"), ("corp".into(), "bob".into(), Source::TrustedHeader));
        assert_eq!(who(&t, &h, "::1"), ("default".into(), "bob".into(), Source::TrustedHeader));
        let strict = networked(None, false);
        assert_eq!(strict.identify(&h, ip("::1")), Err(IdentifyError::NoTeam));
    }

    #[test]
    fn bad_trusted_headers_are_refused_not_guessed() {
        let t = networked(Some("default"), true);
        for (user, team) in [("", "payments"), ("bob", "Payments Team"), ("bob", "../etc")] {
            let h = headers(&[("x-forwarded-user", user), ("x-forwarded-team", team)]);
            assert!(matches!(t.identify(&h, ip("10.9.9.9")), Err(IdentifyError::BadHeader { .. })), "{user} {team}");
        }
    }

    #[test]
    fn proxy_door_precedence() {
        let t = networked(None, true);
        let basic = headers(&[("proxy-authorization", "Basic YWxpY2U6c2xrLWFsaWNl")]); // alice:slk-alice
        assert_eq!(t.identify_proxy(&basic, ip("192.0.2.1")).unwrap().1, Source::Token);
        let wrong = headers(&[("proxy-authorization", "Basic YWxpY2U6bm9wZQ==")]); // alice:nope
        assert_eq!(t.identify_proxy(&wrong, ip("192.0.2.1")), Err(IdentifyError::InvalidProxyCredentials));
        assert_eq!(t.identify_proxy(&wrong, ip("10.20.0.9")).unwrap().1, Source::Network);
        assert_eq!(t.identify_proxy(&HeaderMap::new(), ip("192.0.2.1")), Err(IdentifyError::MissingProxyCredentials));
        let h = headers(&[("x-forwarded-user", "carol"), ("x-forwarded-team", "payments")]);
        assert_eq!(t.identify_proxy(&h, ip("10.9.9.9")).unwrap().1, Source::TrustedHeader);
    }

    #[test]
    fn identity_headers_are_stripped() {
        let t = networked(None, true);
        let mut h = headers(&[("x-forwarded-user", "bob"), ("x-forwarded-team", "payments"), ("x-other", "1")]);
        assert!(t.is_identity_header(&HeaderName::from_static("x-forwarded-user")));
        t.strip_identity_headers(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-other"]);
    }

    #[test]
    fn identity_header_names_are_checked() {
        assert!(check_identity_header("x-forwarded-user").is_ok());
        assert!(check_identity_header("X-Forwarded-User").is_err());
        assert!(check_identity_header("authorization").is_err());
        assert!(check_identity_header("x bad").is_err());
    }
}

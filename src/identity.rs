//! Identify: who is asking. Maps sluice tokens to (team, user), whether
//! they come as an API key (gateway) or as proxy credentials (forward proxy).
//!
//! Tokens are kept only as SHA-256 digests, in config and in memory, so a
//! leaked config or core dump does not leak usable tokens.

use std::collections::HashMap;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::IdentityConfig;
use crate::wire::Identity;

pub struct IdentityTable {
    by_digest: HashMap<[u8; 32], Identity>,
    anonymous_team: Option<String>,
}

/// Why the forward proxy cannot tell who is asking (answered 407).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyAuthError {
    #[error("invalid sluice proxy credentials")]
    Invalid,
    #[error("sluice proxy requires authentication: Proxy-Authorization: Basic user:token")]
    Missing,
}

/// The outcome of identifying a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A valid sluice token. `own_key` is the API key the client sent when
    /// the token came in `x-sluice-token` instead (perhaps its provider key).
    Token { identity: Identity, own_key: Option<&'a str> },
    /// No valid sluice token; `key` is whatever API key the client sent
    /// (perhaps its own provider key).
    Unknown { key: Option<&'a str> },
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
        IdentityTable { by_digest, anonymous_team: cfg.anonymous_team.clone() }
    }

    pub fn identify<'a>(&self, headers: &'a HeaderMap) -> Caller<'a> {
        let key = api_key(headers);
        // An explicit sluice token header wins, so a client can send its own
        // provider key as the API key and still be identified.
        let header_token = headers.get("x-sluice-token").and_then(|v| v.to_str().ok());
        let (token, own_key) = match header_token {
            Some(t) => (Some(t), key),
            None => (key, None),
        };
        if let Some(identity) = token.and_then(|t| self.lookup(t)) {
            return Caller::Token { identity: identity.clone(), own_key };
        }
        Caller::Unknown { key }
    }

    /// The caller at the forward proxy: the token in `Proxy-Authorization:
    /// Basic` (as password, or as user name with an empty password), or the
    /// anonymous team when there is one.
    pub fn identify_proxy(&self, headers: &HeaderMap) -> Result<Identity, ProxyAuthError> {
        let given = headers.get(http::header::PROXY_AUTHORIZATION);
        if let Some(value) = given {
            let token = value.to_str().ok().and_then(basic_token);
            if let Some(identity) = token.as_deref().and_then(|t| self.lookup(t)) {
                return Ok(identity.clone());
            }
        }
        match self.anonymous() {
            Some(identity) => Ok(identity),
            None if given.is_some() => Err(ProxyAuthError::Invalid),
            None => Err(ProxyAuthError::Missing),
        }
    }

    pub fn lookup(&self, token: &str) -> Option<&Identity> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_digest.get(&digest)
    }

    pub fn anonymous(&self) -> Option<Identity> {
        self.anonymous_team.as_ref().map(|team| Identity { team: team.clone(), user: "anonymous".to_string() })
    }

    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.by_digest.values().map(|i| i.team.as_str()).chain(self.anonymous_team.as_deref())
    }
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

/// The token in a `Basic` credential: the password, or the user name when
/// the password is empty (some clients put the token there).
fn basic_token(value: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, encoded) = value.trim().split_once(' ')?;
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
    use crate::config::TokenEntry;

    #[test]
    fn basic_credentials() {
        // "alice:slk-1" and "slk-2:" (token as user name, as some clients send it)
        assert_eq!(basic_token("Basic YWxpY2U6c2xrLTE="), Some("slk-1".into()));
        assert_eq!(basic_token("basic c2xrLTI6"), Some("slk-2".into()));
        assert_eq!(basic_token("Bearer abc"), None);
        assert_eq!(basic_token("Basic !!!"), None);
        assert_eq!(basic_token("Basic Og=="), None); // ":"
    }

    fn table(anon: Option<&str>) -> IdentityTable {
        IdentityTable::new(&IdentityConfig {
            anonymous_team: anon.map(String::from),
            tokens: vec![TokenEntry { sha256: hash_token("slk-alice"), team: "payments".into(), user: "alice".into() }],
        })
    }

    #[test]
    fn bearer_and_x_api_key_identify() {
        let t = table(None);
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer slk-alice".parse().unwrap());
        assert_eq!(
            t.identify(&h),
            Caller::Token { identity: Identity { team: "payments".into(), user: "alice".into() }, own_key: None }
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "slk-alice".parse().unwrap());
        assert!(matches!(t.identify(&h), Caller::Token { own_key: None, .. }));
    }

    #[test]
    fn own_key_with_sluice_token_header() {
        let t = table(None);
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-client-own".parse().unwrap());
        assert_eq!(t.identify(&h), Caller::Unknown { key: Some("sk-client-own") });
        h.insert("x-sluice-token", "slk-alice".parse().unwrap());
        assert!(matches!(t.identify(&h), Caller::Token { own_key: Some("sk-client-own"), .. }));
    }

    #[test]
    fn anonymous_team() {
        assert_eq!(table(None).anonymous(), None);
        assert_eq!(table(Some("default")).anonymous().unwrap().team, "default");
    }
}

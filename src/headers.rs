//! The one list of headers sluice never passes on: those that describe a
//! single hop (RFC 9110 §7.6.1, plus the proxy ones clients still send),
//! and those that carry credentials meant for sluice itself.
//!
//! A leaf: the pipeline and the forward proxy both strip with it.

use http::{HeaderMap, HeaderName};

/// Headers that describe one connection, not the request.
pub const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"];

/// Credentials for sluice: the proxy's own, and sluice tokens.
pub const PROXY_CREDENTIALS: &[&str] = &["proxy-authorization", "proxy-authenticate"];

/// Credentials for a provider, replaced at the gateway by sluice's key
/// unless the client's own key is passed on.
pub const PROVIDER_CREDENTIALS: &[&str] = &["authorization", "x-api-key", "x-goog-api-key", "x-sluice-token"];

/// Whether a client header may be copied into a request sluice builds for
/// a provider: not a hop header, not a credential, not `host` or
/// `content-length` (set for the new request).
pub fn forwardable(name: &HeaderName) -> bool {
    let name = name.as_str();
    !(name == "host"
        || name == "content-length"
        || HOP_BY_HOP.contains(&name)
        || PROXY_CREDENTIALS.contains(&name)
        || PROVIDER_CREDENTIALS.contains(&name))
}

/// Remove the hop headers from a message relayed as it is.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Remove the hop headers and sluice's proxy credentials from a request
/// the proxy relays to its origin.
pub fn strip_for_origin(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in PROXY_CREDENTIALS {
        headers.remove(*name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_headers_are_not_forwarded() {
        for h in [
            "authorization",
            "x-api-key",
            "x-sluice-token",
            "host",
            "connection",
            "transfer-encoding",
            "proxy-authorization",
        ] {
            assert!(!forwardable(&HeaderName::from_static(h)), "{h}");
        }
        assert!(forwardable(&HeaderName::from_static("anthropic-version")));
        assert!(forwardable(&HeaderName::from_static("openai-organization")));
    }

    #[test]
    fn origin_requests_lose_hop_and_proxy_headers_only() {
        let mut h = HeaderMap::new();
        for name in ["connection", "te", "proxy-authorization", "authorization", "x-custom"] {
            h.insert(HeaderName::from_static(name), "v".parse().unwrap());
        }
        strip_for_origin(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "x-custom"], "the client's own provider key goes on at the proxy");
    }
}

//! Request ids: every request gets one, stored in its audit record
//! (`request_id`), returned in the `x-request-id` response header and put on
//! its tracing span, so an answer a client holds can be matched to its record.
//!
//! A client's own `x-request-id` is adopted when it is well-formed (1 to 64
//! characters of `A-Z a-z 0-9 . _ : -`), so ids a caller already logs line up;
//! anything else is replaced by a generated id: a per-process random prefix
//! and a counter, unique across restarts without a random draw per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client id adopted.
const MAX_LEN: usize = 64;

/// One request's id; always a valid header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }

    /// Sets `x-request-id` on an answer. An origin's own id (providers send
    /// one) moves to `x-upstream-request-id` rather than being lost.
    pub fn set_on(&self, headers: &mut HeaderMap) {
        let Some(value) = self.header_value() else { return };
        if let Some(theirs) = headers.insert(HEADER, value) {
            if theirs.as_bytes() != self.0.as_bytes() {
                headers.insert(HeaderName::from_static("x-upstream-request-id"), theirs);
            }
        }
    }
}

/// Whether a client's id is adopted as it is.
fn well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Hands out request ids.
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        // Not a secret, only distinct per process: the time, the process id
        // and an address chosen by ASLR are plenty.
        let mut h = Sha256::new();
        h.update(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0).to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        let local = 0u8;
        h.update((&local as *const u8 as usize).to_le_bytes());
        let digest = h.finalize();
        RequestIds { prefix: hex::encode(&digest[..6]), next: AtomicU64::new(1) }
    }

    /// The client's `x-request-id` if well-formed, else a new one.
    pub fn of(&self, headers: &HeaderMap) -> RequestId {
        match headers.get(HEADER) {
            Some(v) if well_formed(v.as_bytes()) => {
                // Checked to be ASCII above.
                RequestId(String::from_utf8_lossy(v.as_bytes()).into_owned())
            }
            _ => self.generate(),
        }
    }

    pub fn generate(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        RequestId(format!("{}-{n:x}", self.prefix))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn a_well_formed_client_id_is_adopted() {
        let ids = RequestIds::new();
        for id in ["abc", "req_01HZX:2024-05.01", &"a".repeat(64)] {
            assert_eq!(ids.of(&with(id.as_bytes())).as_str(), id);
        }
    }

    #[test]
    fn anything_else_gets_a_fresh_id() {
        let ids = RequestIds::new();
        for bad in [&b""[..], b"has space", b"semi;colon", b"slash/", &[b'a'; 65][..], b"caf\xc3\xa9"] {
            let id = ids.of(&with(bad));
            assert_ne!(id.as_str().as_bytes(), bad);
            assert!(well_formed(id.as_str().as_bytes()), "{id:?}");
        }
        let a = ids.of(&HeaderMap::new());
        let b = ids.of(&HeaderMap::new());
        assert_ne!(a, b);
        assert!(well_formed(a.as_str().as_bytes()) && a.header_value().is_some());
    }

    #[test]
    fn processes_use_different_prefixes() {
        // Two generators in one process stand in for two processes: the
        // prefix comes from the clock, so they differ.
        let a = RequestIds::new().generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RequestIds::new().generate();
        assert_ne!(a, b);
    }

    #[test]
    fn an_origins_own_id_is_kept_under_another_name() {
        let id = RequestIds::new().generate();
        let mut headers = with(b"req_from_provider");
        id.set_on(&mut headers);
        assert_eq!(headers[HEADER], id.as_str());
        assert_eq!(headers["x-upstream-request-id"], "req_from_provider");
        let mut plain = HeaderMap::new();
        id.set_on(&mut plain);
        assert!(plain.get("x-upstream-request-id").is_none());
    }
}

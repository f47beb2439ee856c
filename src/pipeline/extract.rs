//! Reading a request: its headers (no compressed bodies, JSON where the
//! shape is a JSON API), its body (bounded in size and time), and the body
//! into a canonical request and an inventory of everything in it.

use super::*;

/// A body sluice can read: not compressed (compressed bytes would pass the
/// detectors unread), and JSON where the shape is a JSON API. The audit
/// reason names the problem without the client's header value.
pub(super) fn check_body_headers(headers: &HeaderMap, json_shape: bool) -> Result<(), Refusal> {
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let value = value.to_str().unwrap_or("?");
        if value.split(',').any(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity")) {
            return Err(Refusal::quoting(
                ErrorKind::UnsupportedMediaType,
                format!("Content-Encoding `{value}` is not accepted: sluice inspects request bodies and forwards only what it read; send the body uncompressed"),
                "compressed request body refused",
            ));
        }
    }
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    if !json_shape {
        return Ok(());
    }
    let value = value.to_str().unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.to_ascii_lowercase().ends_with("+json") {
        Ok(())
    } else {
        Err(Refusal::quoting(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Type must be application/json, not `{value}`"),
            "Content-Type is not JSON",
        ))
    }
}

/// Read the whole request body, up to `gateway.max_body_bytes`.
///
/// A client that trickles its body would otherwise hold the request, its
/// connection slot and the buffer for as long as it likes, so the body must
/// keep coming (`body_frame_timeout_ms` of silence at most) and be complete
/// within `body_timeout_ms`; too slow is 408.
///
/// An oversized body is still read (and thrown away) for a short while
/// before the 413 goes out, like nginx's lingering close: a client that is
/// still writing when the server closes gets a broken pipe instead of the
/// answer. The drain is bounded in bytes and time so it cannot be abused.
pub(super) async fn read_body(
    mut body: Incoming,
    headers: &HeaderMap,
    gateway: &crate::config::GatewayConfig,
) -> Result<Bytes, Refusal> {
    let limit = gateway.max_body_bytes;
    let too_large = || Refusal::new(ErrorKind::TooLarge, format!("request body exceeds the limit of {limit} bytes"));
    let frame_timeout = Duration::from_millis(gateway.body_frame_timeout_ms);
    let body_deadline = tokio::time::Instant::now() + Duration::from_millis(gateway.body_timeout_ms);
    let too_slow = |stalled: bool| {
        let message = if stalled {
            format!("request body stalled for more than {} ms", gateway.body_frame_timeout_ms)
        } else {
            format!("request body took longer than {} ms to arrive", gateway.body_timeout_ms)
        };
        Refusal::new(ErrorKind::RequestTimeout, message)
    };
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    // A declared length is only a claim: reserving all of it up front would
    // let slow clients pin the whole limit each before sending anything.
    const RESERVE_AT_MOST: u64 = 1024 * 1024;
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64).min(RESERVE_AT_MOST) as usize);
    let mut over = declared.is_some_and(|n| n > limit as u64);
    let drain_until = tokio::time::Instant::now() + DRAIN_TIME;
    let mut drained: u64 = 0;
    loop {
        let frame = if over {
            match tokio::time::timeout_at(drain_until, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Err(too_large()),
            }
        } else {
            let stall_deadline = tokio::time::Instant::now() + frame_timeout;
            match tokio::time::timeout_at(stall_deadline.min(body_deadline), body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Err(too_slow(stall_deadline <= body_deadline)),
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                return Err(Refusal::new(ErrorKind::InvalidRequest, format!("cannot read request body: {e}")))
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        if over {
            drained += data.len() as u64;
            if drained > DRAIN_BYTES {
                return Err(too_large());
            }
            continue;
        }
        if buf.len() + data.len() > limit {
            over = true;
            buf.clear();
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if over {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// Bounds on reading an oversized body before answering 413.
pub(super) const DRAIN_TIME: Duration = Duration::from_secs(2);

pub(super) const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_rules() {
        let mut h = HeaderMap::new();
        assert!(check_body_headers(&h, true).is_ok());
        h.insert("content-type", "application/json; charset=utf-8".parse().unwrap());
        assert!(check_body_headers(&h, true).is_ok());
        h.insert("content-type", "text/plain".parse().unwrap());
        let refusal = check_body_headers(&h, true).unwrap_err();
        assert_eq!(refusal.kind, ErrorKind::UnsupportedMediaType);
        assert!(refusal.message.contains("text/plain"));
        assert!(!refusal.reason.unwrap().contains("text/plain"), "the record never quotes the client");
        // Unknown shapes may carry any content type, never a compressed one.
        assert!(check_body_headers(&h, false).is_ok());
        h.insert("content-encoding", "gzip".parse().unwrap());
        assert!(check_body_headers(&h, false).is_err());
        h.insert("content-encoding", "identity".parse().unwrap());
        assert!(check_body_headers(&h, false).is_ok());
    }
}

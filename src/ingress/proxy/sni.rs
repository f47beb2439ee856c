//! The server name a CONNECT tunnel is really for: the SNI of the client's
//! TLS ClientHello, read without terminating TLS.
//!
//! A client may name an IP address on the CONNECT line and the host it wants
//! in the ClientHello; sluice judges a tunnel by both. The proxy reads the
//! client's first bytes (at most [`MAX_HELLO_BYTES`], within a timeout),
//! parses them here, and keeps them so that a tunnel replays them to the
//! origin byte for byte, or the TLS acceptor of an intercepted connection
//! reads them as if they had never been taken.
//!
//! The parser is deliberately strict where leniency would let a client hide
//! a name: a ClientHello split across several records is reassembled, but
//! duplicate extensions, a server-name list that is not exactly one host
//! name, a name that is not a DNS host name, or trailing bytes are errors,
//! and the proxy refuses what it cannot read rather than tunnel it unseen.
//! It never panics on any input (see the tests and the truncation sweep).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The most client bytes read while looking for a complete ClientHello.
/// Real ones are 0.5-2 KiB (a post-quantum key share included); a client
/// needing more is refused rather than buffered without bound.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
/// RFC 8446 5.1: a plaintext record carries at most 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
/// draft-ietf-tls-esni: the real server name is encrypted inside.
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What a complete ClientHello says about where the client is going.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name, lower-case, without a trailing dot; `None` when
    /// the client sent no server_name extension.
    pub server_name: Option<String>,
    /// The hello carries an Encrypted ClientHello extension (real or GREASE):
    /// the name above is then only the outer, public one.
    pub ech: bool,
}

/// The result of parsing the bytes read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Complete(ClientHello),
    /// Well-formed so far; more bytes are needed.
    NeedMore,
}

/// Why the first bytes are not a ClientHello sluice can read. Messages are
/// fixed texts: they go into audit reasons and never echo client bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    #[error("the client's first bytes are not a TLS handshake")]
    NotTls,
    #[error("the first TLS handshake message is not a ClientHello")]
    NotClientHello,
    #[error("the ClientHello is larger than sluice reads ({MAX_HELLO_BYTES} bytes)")]
    TooLarge,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("the ClientHello's server name is not a valid host name")]
    InvalidName,
}

/// Why no ClientHello could be had from the client.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error(transparent)]
    Parse(#[from] SniError),
    #[error("the client sent no complete ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("the client closed the tunnel before sending a complete ClientHello")]
    Closed,
    #[error("reading the ClientHello failed: {0}")]
    Io(#[from] std::io::Error),
}

impl HelloError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HelloError::Parse(SniError::NotTls) => "not_tls",
            HelloError::Parse(SniError::TooLarge) => "hello_too_large",
            HelloError::Parse(_) => "bad_hello",
            HelloError::Timeout(_) => "hello_timeout",
            HelloError::Closed | HelloError::Io(_) => "no_hello",
        }
    }
}

/// Read from `io` until the bytes hold a complete ClientHello, at most
/// [`MAX_HELLO_BYTES`] and for at most `wait`. Every byte read is returned,
/// whatever the outcome, so the caller can replay them or count them.
pub async fn read_client_hello<S>(io: &mut S, wait: Duration) -> (Vec<u8>, Result<ClientHello, HelloError>)
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(2048);
    let result = match tokio::time::timeout(wait, fill(io, &mut buf)).await {
        Ok(result) => result,
        Err(_) => Err(HelloError::Timeout(wait)),
    };
    (buf, result)
}

async fn fill<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Result<ClientHello, HelloError> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Progress::Complete(hello) = parse(buf)? {
            return Ok(hello);
        }
        let room = MAX_HELLO_BYTES.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Err(SniError::TooLarge.into());
        }
        let n = io.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parse the first bytes a client sent: TLS records carrying a ClientHello,
/// possibly fragmented across records and possibly followed by more data.
pub fn parse(bytes: &[u8]) -> Result<Progress, SniError> {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = bytes;
    loop {
        // Judge what has arrived before asking for more, so that garbage is
        // refused at once instead of after a timeout.
        let Some(header) = rest.get(..RECORD_HEADER) else {
            check_record_prefix(rest)?;
            return Ok(Progress::NeedMore);
        };
        check_record_prefix(header)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(SniError::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(SniError::Malformed("record longer than 2^14 bytes"));
        }
        let available = &rest[RECORD_HEADER..];
        let fragment = &available[..len.min(available.len())];
        handshake.extend_from_slice(fragment);
        if let Some(progress) = handshake_message(&handshake)? {
            return Ok(progress);
        }
        if fragment.len() < len {
            return Ok(Progress::NeedMore);
        }
        rest = &available[len..];
    }
}

/// The record header's type and version, as far as they have arrived.
fn check_record_prefix(header: &[u8]) -> Result<(), SniError> {
    if header.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(SniError::NotTls);
    }
    // legacy_record_version: 3.x (SSL 3.0 framing, as every TLS version uses).
    if header.get(1).is_some_and(|&major| major != 3) {
        return Err(SniError::NotTls);
    }
    Ok(())
}

/// The ClientHello, once the reassembled handshake bytes hold all of it;
/// `None` while they do not.
fn handshake_message(handshake: &[u8]) -> Result<Option<Progress>, SniError> {
    if let Some(&kind) = handshake.first() {
        if kind != HANDSHAKE_CLIENT_HELLO {
            return Err(SniError::NotClientHello);
        }
    }
    let Some(header) = handshake.get(..HANDSHAKE_HEADER) else {
        return Ok(None);
    };
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    if len + HANDSHAKE_HEADER + RECORD_HEADER > MAX_HELLO_BYTES {
        return Err(SniError::TooLarge);
    }
    // Bytes after the ClientHello belong to later messages and are not ours
    // to judge; the TLS peer will.
    let Some(body) = handshake.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + len) else {
        return Ok(None);
    };
    client_hello(body).map(|hello| Some(Progress::Complete(hello)))
}

/// RFC 8446 4.1.2 (and the TLS 1.2 shape, which is the same up to the
/// extensions).
fn client_hello(body: &[u8]) -> Result<ClientHello, SniError> {
    let mut r = Reader::new(body);
    r.take(2, "no version")?;
    r.take(32, "no random")?;
    let session_id = r.u8("no session id")?;
    if session_id > 32 {
        return Err(SniError::Malformed("session id longer than 32 bytes"));
    }
    r.take(usize::from(session_id), "truncated session id")?;
    let suites = usize::from(r.u16("no cipher suites")?);
    if suites < 2 || suites % 2 != 0 {
        return Err(SniError::Malformed("bad cipher suite list"));
    }
    r.take(suites, "truncated cipher suites")?;
    let compression = r.u8("no compression methods")?;
    if compression == 0 {
        return Err(SniError::Malformed("empty compression method list"));
    }
    r.take(usize::from(compression), "truncated compression methods")?;
    let mut hello = ClientHello { server_name: None, ech: false };
    if r.is_empty() {
        // A hello without extensions (pre-TLS 1.2 clients) names no server.
        return Ok(hello);
    }
    let len = usize::from(r.u16("truncated extensions length")?);
    let mut exts = Reader::new(r.take(len, "truncated extensions")?);
    if !r.is_empty() {
        return Err(SniError::Malformed("bytes after the extensions"));
    }
    let mut seen: Vec<u16> = Vec::new();
    while !exts.is_empty() {
        let kind = exts.u16("truncated extension type")?;
        let len = usize::from(exts.u16("truncated extension length")?);
        let data = exts.take(len, "truncated extension")?;
        // A second server_name could tell sluice one host and the origin
        // another; TLS forbids duplicates of any extension (RFC 8446 4.2).
        if seen.contains(&kind) {
            return Err(SniError::Malformed("duplicate extension"));
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = Some(server_name(data)?),
            EXT_ENCRYPTED_CLIENT_HELLO => hello.ech = true,
            _ => {}
        }
    }
    Ok(hello)
}

/// RFC 6066 3: `ServerName server_name_list<1..2^16-1>`. Only one entry, a
/// host_name, is accepted (as OpenSSL does): other name types were never
/// defined, and servers disagree on how to skip them.
fn server_name(data: &[u8]) -> Result<String, SniError> {
    let mut r = Reader::new(data);
    let len = usize::from(r.u16("truncated server name list")?);
    let mut list = Reader::new(r.take(len, "truncated server name list")?);
    if !r.is_empty() {
        return Err(SniError::Malformed("bytes after the server name list"));
    }
    if list.u8("empty server name list")? != NAME_TYPE_HOST_NAME {
        return Err(SniError::Malformed("server name is not a host name"));
    }
    let len = usize::from(list.u16("truncated host name")?);
    let name = list.take(len, "truncated host name")?;
    if !list.is_empty() {
        return Err(SniError::Malformed("more than one server name"));
    }
    host_name(name).ok_or(SniError::InvalidName)
}

/// A DNS host name, lower-cased and without a trailing dot; `None` for
/// anything else (bytes outside letters, digits, `-`, `_` and `.`, empty
/// or over-long labels). IPv4 literals pass as names: they are not
/// allowed in SNI, but they can never match an intercepted host either.
fn host_name(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > 253 {
        return None;
    }
    let valid_label = |label: &[u8]| {
        !label.is_empty()
            && label.len() <= 63
            && label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    };
    if !raw.split(|b| *b == b'.').all(valid_label) {
        return None;
    }
    // Checked ASCII above, so this conversion cannot fail.
    std::str::from_utf8(raw).ok().map(str::to_ascii_lowercase)
}

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SniError> {
        if n > self.bytes.len() {
            return Err(SniError::Malformed(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SniError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, SniError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16be(n: usize) -> [u8; 2] {
        (n as u16).to_be_bytes()
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&u16be(data.len()));
        out.extend_from_slice(data);
        out
    }

    fn sni_extension(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![NAME_TYPE_HOST_NAME];
        entry.extend_from_slice(&u16be(name.len()));
        entry.extend_from_slice(name);
        let mut list = u16be(entry.len()).to_vec();
        list.extend_from_slice(&entry);
        extension(EXT_SERVER_NAME, &list)
    }

    /// A ClientHello handshake message (header included) with `extensions`.
    fn hello_message(extensions: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(32);
        body.extend_from_slice(&[9u8; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        if let Some(ext) = extensions {
            body.extend_from_slice(&u16be(ext.len()));
            body.extend_from_slice(ext);
        }
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// `message` framed in handshake records of at most `chunk` bytes each.
    fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in message.chunks(chunk) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&u16be(part.len()));
            out.extend_from_slice(part);
        }
        out
    }

    fn hello_for(name: &str) -> Vec<u8> {
        let mut ext = extension(0x000a, &[0, 2, 0, 0x1d]);
        ext.extend(sni_extension(name.as_bytes()));
        ext.extend(extension(0x0010, &[0, 3, 2, b'h', b'2']));
        records(&hello_message(Some(&ext)), MAX_RECORD_PAYLOAD)
    }

    fn named(name: &str) -> Progress {
        Progress::Complete(ClientHello { server_name: Some(name.into()), ech: false })
    }

    #[test]
    fn reads_the_server_name() {
        assert_eq!(parse(&hello_for("API.OpenAI.com.")), Ok(named("api.openai.com")));
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let mut ext = sni_extension(b"api.anthropic.com");
        ext.extend(extension(0x002b, &[2, 3, 4]));
        for chunk in [1, 7, 50] {
            let bytes = records(&hello_message(Some(&ext)), chunk);
            assert_eq!(parse(&bytes), Ok(named("api.anthropic.com")), "records of {chunk} bytes");
        }
    }

    #[test]
    fn bytes_after_the_hello_are_not_judged() {
        let mut bytes = hello_for("example.com");
        bytes.extend_from_slice(&[23, 3, 3, 0, 2, 0xde, 0xad]);
        assert_eq!(parse(&bytes), Ok(named("example.com")));
    }

    #[test]
    fn no_extensions_or_no_sni_means_no_name() {
        let none = Progress::Complete(ClientHello { server_name: None, ech: false });
        assert_eq!(parse(&records(&hello_message(None), 512)), Ok(none.clone()));
        let other = extension(0x000a, &[0, 2, 0, 0x1d]);
        assert_eq!(parse(&records(&hello_message(Some(&other)), 512)), Ok(none));
    }

    #[test]
    fn encrypted_client_hello_is_flagged() {
        let mut ext = sni_extension(b"public.example");
        ext.extend(extension(EXT_ENCRYPTED_CLIENT_HELLO, &[0, 1, 2, 3]));
        let got = parse(&records(&hello_message(Some(&ext)), 512));
        assert_eq!(got, Ok(Progress::Complete(ClientHello { server_name: Some("public.example".into()), ech: true })));
    }

    #[test]
    fn every_truncation_asks_for_more_and_never_panics() {
        let full = hello_for("api.openai.com");
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(Progress::NeedMore), "cut at {cut}");
        }
        let split = records(&hello_message(Some(&sni_extension(b"a.example"))), 5);
        for cut in 0..split.len() {
            assert_eq!(parse(&split[..cut]), Ok(Progress::NeedMore), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_refused_at_once() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(SniError::NotTls));
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Err(SniError::NotTls));
        assert_eq!(parse(&[0x16, 0x02]), Err(SniError::NotTls));
        assert_eq!(parse(&[0x16, 3, 1, 0, 0]), Err(SniError::Malformed("empty handshake record")));
        assert_eq!(parse(&[0x16, 3, 1, 0x40, 0x01]), Err(SniError::Malformed("record longer than 2^14 bytes")));
        // A ServerHello, or a ClientHello claiming to be enormous.
        assert_eq!(parse(&[0x16, 3, 3, 0, 4, 2, 0, 0, 0]), Err(SniError::NotClientHello));
        assert_eq!(parse(&[0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]), Err(SniError::TooLarge));
        // A record of another type between the fragments of a hello.
        let message = hello_message(Some(&sni_extension(b"a.example")));
        let mut bytes = records(&message[..10], 10);
        bytes.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(parse(&bytes), Err(SniError::NotTls));
    }

    #[test]
    fn evasive_hellos_are_refused() {
        let mut two = sni_extension(b"example.com");
        two.extend(sni_extension(b"api.openai.com"));
        assert_eq!(parse(&records(&hello_message(Some(&two)), 512)), Err(SniError::Malformed("duplicate extension")));

        let mut entries = Vec::new();
        for name in [&b"example.com"[..], b"api.openai.com"] {
            entries.push(NAME_TYPE_HOST_NAME);
            entries.extend_from_slice(&u16be(name.len()));
            entries.extend_from_slice(name);
        }
        let mut list = u16be(entries.len()).to_vec();
        list.extend_from_slice(&entries);
        let ext = extension(EXT_SERVER_NAME, &list);
        assert_eq!(
            parse(&records(&hello_message(Some(&ext)), 512)),
            Err(SniError::Malformed("more than one server name"))
        );

        let odd_type = extension(EXT_SERVER_NAME, &[0, 4, 1, 0, 1, b'x']);
        assert_eq!(
            parse(&records(&hello_message(Some(&odd_type)), 512)),
            Err(SniError::Malformed("server name is not a host name"))
        );
        let empty = extension(EXT_SERVER_NAME, &[]);
        assert_eq!(
            parse(&records(&hello_message(Some(&empty)), 512)),
            Err(SniError::Malformed("truncated server name list"))
        );

        for name in
            [&b""[..], b"api.openai.com\0.evil", b"a..b", b"bad name", b"\xc3\xa9.example", b"[::1]", &[b'a'; 300]]
        {
            let ext = sni_extension(name);
            assert_eq!(parse(&records(&hello_message(Some(&ext)), 512)), Err(SniError::InvalidName), "{name:?}");
        }

        let mut trailing = hello_message(Some(&sni_extension(b"example.com")));
        trailing.push(0);
        let len = trailing.len() - HANDSHAKE_HEADER;
        trailing[1..4].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        assert_eq!(parse(&records(&trailing, 512)), Err(SniError::Malformed("bytes after the extensions")));
    }

    #[test]
    fn corrupted_hellos_never_panic() {
        // Flip every byte of a real-shaped hello in turn; any answer is fine
        // as long as there is one.
        let full = hello_for("api.openai.com");
        for i in 0..full.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut bytes = full.clone();
                bytes[i] = value;
                let _ = parse(&bytes);
            }
        }
    }

    #[test]
    fn a_real_rustls_hello_is_read() {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("generativelanguage.googleapis.com").unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        conn.write_tls(&mut bytes).unwrap();
        assert_eq!(parse(&bytes), Ok(named("generativelanguage.googleapis.com")));
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(Progress::NeedMore));
        }
    }

    #[tokio::test]
    async fn reading_keeps_every_byte_and_is_bounded() {
        let bytes = hello_for("api.openai.com");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = bytes.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // Dribbled in small writes, followed by application data.
            for part in sent.chunks(3) {
                client.write_all(part).await.unwrap();
            }
            client.write_all(b"more").await.unwrap();
            std::future::pending::<()>().await;
        });
        let (got, hello) = read_client_hello(&mut server, Duration::from_secs(5)).await;
        assert_eq!(hello.unwrap().server_name.as_deref(), Some("api.openai.com"));
        assert!(got.starts_with(&bytes), "the hello is kept for replay");

        let (_quiet, mut server) = tokio::io::duplex(64);
        let (got, hello) = read_client_hello(&mut server, Duration::from_millis(50)).await;
        assert!(got.is_empty());
        assert!(matches!(hello, Err(HelloError::Timeout(_))), "{hello:?}");

        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let (_, hello) = read_client_hello(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(hello, Err(HelloError::Closed)), "{hello:?}");

        // A hello that fits the limit by its own length but, cut into many
        // small records, not in raw bytes, stops at the cap.
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut message = vec![HANDSHAKE_CLIENT_HELLO, 0, 0x3e, 0x80];
            message.resize(HANDSHAKE_HEADER + 16_000, 0);
            let _ = client.write_all(&records(&message, 100)).await;
            std::future::pending::<()>().await;
        });
        let (got, hello) = read_client_hello(&mut server, Duration::from_secs(5)).await;
        assert!(got.len() <= MAX_HELLO_BYTES);
        assert!(matches!(hello, Err(HelloError::Parse(SniError::TooLarge))), "{hello:?}");
    }
}

//! Reading the audit log while `sluice serve` runs.
//!
//! sled lets one process open the log, and the server holds it. So while it
//! runs, readers (`sluice audit query`, `verify`, `export`, `sluice shadow
//! report`, `sluice policy replay`) ask the server instead: its admin
//! listener runs the same library code on its open log
//! ([`AuditLog::read_matching`], [`AuditLog::verify`]) and sends the
//! result, so the answers are those a stopped server's files give.
//! [`AuditSource::open`] tries the files first and turns to the server only
//! when a live one holds them.
//!
//! # Authentication
//!
//! Each `serve` start writes a fresh random token (256 bits, hex) to
//! `<audit.dir>/admin.token`, 0600 inside the 0700 audit directory: whoever
//! can read the log's files when the server is stopped can read the log
//! through the server, and no one else. Setting [`TOKEN_ENV`] for `serve`
//! uses that token instead (at least 32 characters; no file is written, and
//! readers need the same variable). Requests carry `Authorization: Bearer
//! <token>`, compared in constant time; without it the endpoints answer
//! 401 and nothing else. Each read is logged with the reader's address.
//!
//! # Endpoints (admin listener)
//!
//! - `GET /audit/records?since_ms=&until_ms=&team=&decision=&limit=`: the
//!   records [`AuditLog::query`] would return, one [`StoredRecord`] per
//!   line (`application/x-ndjson`, exactly `sluice audit query --json`),
//!   streamed as they are read. A failure part-way aborts the response,
//!   so a reader never takes a truncated list for a whole one.
//! - `GET /audit/verify`: [`AuditLog::verify`]'s [`VerifyReport`] as JSON.
//! - `GET /audit/checkpoints`: the stored signed checkpoints, oldest first
//!   (JSON list of [`StoredCheckpoint`]); `GET /audit/checkpoint`: the
//!   newest one (or `null`).
//! - `GET /audit/ends` and `GET /audit/record?seq=N`: the oldest record and
//!   the newest sequence number, and one record (or `null`): what checking
//!   checkpoints reads ([`ChainView`]), so `sluice audit verify
//!   --checkpoints` proves a running server's log with the reader's own key.
//!
//! The same token also opens `/budget` (`sluice budget status`): one admin
//! credential for every reader.
//!
//! Memory: records are never held together, but sled keeps state for every
//! page a walk touches, so the server's first full read grows its resident
//! memory by about the log's size on disk (once; `BENCHMARKS.md`).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use sha2::{Digest, Sha256};

use super::note::Verifier;
use super::{
    check_checkpoints, AuditError, AuditFilter, AuditLog, ChainView, Located, ProofReport, StoredCheckpoint,
    StoredRecord, VerifyReport,
};

/// The token file, in the audit directory.
pub const TOKEN_FILE: &str = "admin.token";
/// A token of the operator's choosing, for `serve` and readers alike.
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";
const MIN_TOKEN_LEN: usize = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// Causes are part of the messages and not chained as `source`, so that the
// CLI's `error: a: b` does not print them twice.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{TOKEN_ENV} must be at least {MIN_TOKEN_LEN} characters")]
    WeakToken,
    #[error("cannot write the admin token {}: {reason}", path.display())]
    WriteToken { path: PathBuf, reason: std::io::Error },
    #[error("cannot read the admin token {} (set {TOKEN_ENV} if the server was started with it): {reason}", path.display())]
    ReadToken { path: PathBuf, reason: std::io::Error },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("the server refused the admin token from {from} (is it from this server's start?)")]
    Refused { from: String },
    #[error("the server has no audit endpoint (is it an older sluice?)")]
    NoEndpoint,
    #[error("the server answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the server's answer was cut off or malformed: {0}")]
    Broken(String),
    #[error("cannot start the client: {0}")]
    Runtime(std::io::Error),
}

/// The secret that opens the audit endpoints. Never printed or logged.
#[derive(Clone)]
pub struct AdminToken {
    secret: String,
    /// Where it came from, for messages.
    from: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken(from {})", self.from)
    }
}

impl AdminToken {
    /// The token `serve` accepts: [`TOKEN_ENV`] when set, else a new random
    /// one written to [`TOKEN_FILE`] in `audit_dir` (which must exist).
    pub fn for_serve(audit_dir: &Path) -> Result<AdminToken, RemoteError> {
        let path = audit_dir.join(TOKEN_FILE);
        if let Some(token) = AdminToken::from_env()? {
            // A file from an earlier start would only mislead readers.
            let _ = std::fs::remove_file(&path);
            return Ok(token);
        }
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|reason| RemoteError::WriteToken { path: path.clone(), reason })?;
        let secret = hex::encode(bytes);
        write_private(&path, secret.as_bytes())
            .map_err(|reason| RemoteError::WriteToken { path: path.clone(), reason })?;
        Ok(AdminToken { secret, from: path.display().to_string() })
    }

    /// The token a reader sends: [`TOKEN_ENV`] when set, else the file
    /// `serve` wrote into `audit_dir`.
    pub fn for_reader(audit_dir: &Path) -> Result<AdminToken, RemoteError> {
        if let Some(token) = AdminToken::from_env()? {
            return Ok(token);
        }
        let path = audit_dir.join(TOKEN_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|reason| RemoteError::ReadToken { path: path.clone(), reason })?;
        Ok(AdminToken { secret: text.trim().to_string(), from: path.display().to_string() })
    }

    fn from_env() -> Result<Option<AdminToken>, RemoteError> {
        match std::env::var(TOKEN_ENV) {
            Ok(secret) if !secret.is_empty() => {
                if secret.len() < MIN_TOKEN_LEN {
                    return Err(RemoteError::WeakToken);
                }
                Ok(Some(AdminToken { secret, from: TOKEN_ENV.to_string() }))
            }
            _ => Ok(None),
        }
    }

    /// Whether an `Authorization` header carries this token. The digests
    /// are compared, in time independent of where they differ, so the
    /// answer's timing tells nothing about the token.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let presented = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(self.secret.as_bytes()));
        let differ = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        !presented.is_empty() && differ == 0
    }

    fn header(&self) -> String {
        format!("Bearer {}", self.secret)
    }
}

/// Write `bytes` to `path` readable by the owner only, replacing any
/// earlier file in one step (a reader never sees half a token).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The filter as the query string of `/audit/records`.
pub fn filter_query(filter: &AuditFilter) -> String {
    let mut pairs = Vec::new();
    if let Some(since) = filter.since_ms {
        pairs.push(format!("since_ms={since}"));
    }
    if let Some(until) = filter.until_ms {
        pairs.push(format!("until_ms={until}"));
    }
    if let Some(team) = &filter.team {
        pairs.push(format!("team={}", percent_encode(team)));
    }
    if let Some(decision) = &filter.decision {
        pairs.push(format!("decision={}", percent_encode(decision)));
    }
    if let Some(limit) = filter.limit {
        pairs.push(format!("limit={limit}"));
    }
    pairs.join("&")
}

/// Reads [`filter_query`]'s output back; unknown or malformed parameters
/// are errors, not ignored (a reader must get what it asked for).
pub fn parse_filter_query(query: &str) -> Result<AuditFilter, String> {
    let mut filter = AuditFilter::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| format!("`{pair}` has no value"))?;
        let value = percent_decode(value).ok_or_else(|| format!("`{name}` is not valid percent-encoded UTF-8"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("`{name}` must be a whole number"));
        match name {
            "since_ms" => filter.since_ms = Some(number(&value)?),
            "until_ms" => filter.until_ms = Some(number(&value)?),
            "team" => filter.team = Some(value),
            "decision" => filter.decision = Some(value),
            "limit" => filter.limit = Some(usize::try_from(number(&value)?).map_err(|_| "limit too large")?),
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok(filter)
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A client for a running server's audit endpoints. Blocking: it runs its
/// own small runtime, for the CLI.
pub struct AdminClient {
    addr: SocketAddr,
    token: AdminToken,
    runtime: tokio::runtime::Runtime,
}

impl AdminClient {
    /// A client for the admin listener at `listen` (as configured: an
    /// unspecified address is reached on loopback).
    pub fn new(listen: SocketAddr, token: AdminToken) -> Result<AdminClient, RemoteError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RemoteError::Runtime)?;
        Ok(AdminClient { addr: reachable(listen), token, runtime })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls `each` with the records `filter` selects, as they arrive.
    pub fn records<E: From<RemoteError>>(
        &self,
        filter: &AuditFilter,
        mut each: impl FnMut(StoredRecord) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.runtime.block_on(async {
            let response = self.send(&format!("/audit/records?{}", filter_query(filter))).await?;
            let mut body = response.into_body();
            let mut pending: Vec<u8> = Vec::new();
            let mut count = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| RemoteError::Broken(e.to_string()))?;
                let Ok(data) = frame.into_data() else { continue };
                pending.extend_from_slice(&data);
                let mut start = 0;
                while let Some(end) = memchr::memchr(b'\n', &pending[start..]) {
                    let line = &pending[start..start + end];
                    let stored: StoredRecord =
                        serde_json::from_slice(line).map_err(|e| RemoteError::Broken(format!("a record: {e}")))?;
                    each(stored)?;
                    count += 1;
                    start += end + 1;
                }
                pending.drain(..start);
            }
            if !pending.is_empty() {
                return Err(RemoteError::Broken("the last record has no end".into()).into());
            }
            Ok(count)
        })
    }

    /// The server's [`AuditLog::verify`].
    pub fn verify(&self) -> Result<VerifyReport, RemoteError> {
        let body = self.get("/audit/verify")?;
        serde_json::from_slice(&body).map_err(|e| RemoteError::Broken(format!("a verify report: {e}")))
    }

    /// The server's stored checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, RemoteError> {
        self.json("/audit/checkpoints", "the checkpoints")
    }

    /// The server's newest stored checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, RemoteError> {
        self.json("/audit/checkpoint", "the latest checkpoint")
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> Result<T, RemoteError> {
        let body = self.get(path)?;
        serde_json::from_slice(&body).map_err(|e| RemoteError::Broken(format!("{what}: {e}")))
    }

    /// Any admin path with the token, its whole answer; for the small
    /// answers (`/audit/verify`, a checkpoint).
    pub fn get(&self, path_and_query: &str) -> Result<Bytes, RemoteError> {
        self.runtime.block_on(async {
            let response = self.send(path_and_query).await?;
            Ok(response.into_body().collect().await?.to_bytes())
        })
    }

    /// Sends one GET and returns the response if it is a 200.
    async fn send(&self, path_and_query: &str) -> Result<http::Response<hyper::body::Incoming>, RemoteError> {
        let connect_error = |reason: String| RemoteError::Connect { addr: self.addr, reason };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = Request::get(path_and_query)
            .header(header::HOST, self.addr.to_string())
            .header(header::AUTHORIZATION, self.token.header())
            .body(Empty::<Bytes>::new())
            .map_err(|e| RemoteError::Broken(e.to_string()))?;
        let response = sender.send_request(request).await?;
        match response.status() {
            StatusCode::OK => Ok(response),
            StatusCode::UNAUTHORIZED => Err(RemoteError::Refused { from: self.token.from.clone() }),
            StatusCode::NOT_FOUND => Err(RemoteError::NoEndpoint),
            status => {
                let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let body = String::from_utf8_lossy(&body).trim().chars().take(500).collect();
                Err(RemoteError::Status { status, body })
            }
        }
    }
}

impl ChainView for AdminClient {
    type Error = RemoteError;

    fn ends(&self) -> Result<(Option<StoredRecord>, Option<u64>), RemoteError> {
        self.json("/audit/ends", "the log's ends")
    }

    fn record_at(&self, seq: u64) -> Result<Option<StoredRecord>, RemoteError> {
        self.json(&format!("/audit/record?seq={seq}"), "a record")
    }
}

/// Where to connect for a listener bound to `listen`.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port()),
        _ => listen,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "the audit log at {} is locked by a running sluice, and its admin endpoint at {addr} could not be used: {reason}",
        dir.display()
    )]
    Server { dir: PathBuf, addr: SocketAddr, reason: RemoteError },
}

/// The audit log for a reader: its files when no server holds them, else
/// the running server that does.
pub struct AuditSource {
    dir: PathBuf,
    admin: SocketAddr,
    reader: Reader,
}

enum Reader {
    Files(AuditLog),
    Server(AdminClient),
}

/// An error of a reader's own, or of the walk.
enum Stop<E> {
    Each(E),
    Audit(AuditError),
    Remote(RemoteError),
}

impl<E> From<AuditError> for Stop<E> {
    fn from(e: AuditError) -> Self {
        Stop::Audit(e)
    }
}

impl<E> From<RemoteError> for Stop<E> {
    fn from(e: RemoteError) -> Self {
        Stop::Remote(e)
    }
}

impl AuditSource {
    /// Opens the log in `dir`; when a running server holds it, reads
    /// through that server's admin listener (`admin_listen`, from the
    /// config) instead.
    pub fn open(dir: &Path, admin_listen: SocketAddr) -> Result<AuditSource, SourceError> {
        let admin = reachable(admin_listen);
        let server = |reason| SourceError::Server { dir: dir.to_path_buf(), addr: admin, reason };
        let reader = match AuditLog::open(dir) {
            Ok(log) => Reader::Files(log),
            Err(AuditError::Locked { .. }) => {
                let token = AdminToken::for_reader(dir).map_err(server)?;
                Reader::Server(AdminClient::new(admin, token).map_err(server)?)
            }
            Err(e) => return Err(e.into()),
        };
        Ok(AuditSource { dir: dir.to_path_buf(), admin, reader })
    }

    /// The log itself, when no server holds it.
    pub fn files(&self) -> Option<&AuditLog> {
        match &self.reader {
            Reader::Files(log) => Some(log),
            Reader::Server(_) => None,
        }
    }

    /// The running server's endpoints, when one holds the log.
    pub fn server(&self) -> Option<&AdminClient> {
        match &self.reader {
            Reader::Files(_) => None,
            Reader::Server(client) => Some(client),
        }
    }

    /// What is being read, for a reader's messages.
    pub fn describe(&self) -> String {
        match &self.reader {
            Reader::Files(_) => format!("the audit log in {}", self.dir.display()),
            Reader::Server(_) => {
                format!("the running sluice's audit log, through its admin listener at {}", self.admin)
            }
        }
    }

    /// [`AuditLog::read_matching`], here or on the server.
    pub fn records<E: From<SourceError>>(
        &self,
        filter: &AuditFilter,
        mut each: impl FnMut(StoredRecord) -> Result<(), E>,
    ) -> Result<u64, E> {
        let walked = match &self.reader {
            Reader::Files(log) => log.read_matching(filter, |r| each(r).map_err(Stop::Each)),
            Reader::Server(client) => client.records(filter, |r| each(r).map_err(Stop::Each)),
        };
        walked.map_err(|stop| match stop {
            Stop::Each(e) => e,
            Stop::Audit(e) => E::from(SourceError::Audit(e)),
            Stop::Remote(e) => E::from(self.server_error(e)),
        })
    }

    /// [`AuditLog::verify`], here or on the server.
    pub fn verify(&self) -> Result<VerifyReport, SourceError> {
        match &self.reader {
            Reader::Files(log) => Ok(log.verify()?),
            Reader::Server(client) => client.verify().map_err(|e| self.server_error(e)),
        }
    }

    /// The stored signed checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, SourceError> {
        match &self.reader {
            Reader::Files(log) => Ok(log.checkpoints()?),
            Reader::Server(client) => client.checkpoints().map_err(|e| self.server_error(e)),
        }
    }

    /// The newest stored signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, SourceError> {
        match &self.reader {
            Reader::Files(log) => Ok(log.latest_checkpoint()?),
            Reader::Server(client) => client.latest_checkpoint().map_err(|e| self.server_error(e)),
        }
    }

    /// [`AuditLog::check_checkpoints`], here or on the server's records
    /// (the signatures are always checked here, with the reader's key).
    pub fn check_checkpoints(
        &self,
        verifier: Option<&Verifier>,
        checkpoints: &[Located],
    ) -> Result<ProofReport, SourceError> {
        match &self.reader {
            Reader::Files(log) => Ok(log.check_checkpoints(verifier, checkpoints)?),
            Reader::Server(client) => {
                check_checkpoints(client, verifier, checkpoints).map_err(|e| self.server_error(e))
            }
        }
    }

    /// The audit directory being read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server's failure, named with the locked files it stands in for.
    pub fn server_error(&self, reason: RemoteError) -> SourceError {
        SourceError::Server { dir: self.dir.clone(), addr: self.admin, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_travel_unchanged() {
        let filters = [
            AuditFilter::default(),
            AuditFilter {
                since_ms: Some(1),
                until_ms: Some(u64::MAX),
                team: Some("data science & ops/α=1".into()),
                decision: Some("block".into()),
                limit: Some(7),
            },
        ];
        for filter in filters {
            let back = parse_filter_query(&filter_query(&filter)).expect("parses");
            assert_eq!(format!("{back:?}"), format!("{filter:?}"));
        }
        assert!(parse_filter_query("since_ms=soon").is_err());
        assert!(parse_filter_query("tea=x").is_err());
        assert!(parse_filter_query("team=%zz").is_err());
    }

    #[test]
    fn only_the_exact_token_is_accepted() {
        let token = AdminToken { secret: "s3cret-s3cret-s3cret-s3cret-s3cret".into(), from: "test".into() };
        let header = |v: &str| HeaderValue::from_str(v).expect("header");
        assert!(token.accepts(Some(&header("Bearer s3cret-s3cret-s3cret-s3cret-s3cret"))));
        assert!(!token.accepts(Some(&header("Bearer s3cret-s3cret-s3cret-s3cret-s3cres"))));
        assert!(!token.accepts(Some(&header("Bearer s3cret"))));
        assert!(!token.accepts(Some(&header("s3cret-s3cret-s3cret-s3cret-s3cret"))));
        assert!(!token.accepts(Some(&header("Bearer "))));
        assert!(!token.accepts(None));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn the_token_file_is_private_and_replaced_each_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = AdminToken::for_serve(dir.path()).expect("token");
        let second = AdminToken::for_serve(dir.path()).expect("token");
        assert_ne!(first.secret, second.secret);
        assert_eq!(second.secret.len(), 64);
        let read = AdminToken::for_reader(dir.path()).expect("readable");
        assert_eq!(read.secret, second.secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn unspecified_listeners_are_reached_on_loopback() {
        assert_eq!(reachable("0.0.0.0:9090".parse().unwrap()), "127.0.0.1:9090".parse().unwrap());
        assert_eq!(reachable("[::]:9090".parse().unwrap()), "[::1]:9090".parse().unwrap());
        assert_eq!(reachable("10.0.0.5:9090".parse().unwrap()), "10.0.0.5:9090".parse().unwrap());
    }
}

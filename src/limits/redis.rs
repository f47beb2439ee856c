//! The shared counter store: Redis, spoken over a small RESP2 client.
//!
//! A request's check-and-reserve is one Lua script, so it is atomic across
//! the team's and the user's counters and costs one round trip; usage is
//! added by a second script when answers are done, off the request path
//! and batched (`Limiter::settle`).
//! Every counter carries an `EXPIREAT` at its window's end. One pipelined
//! connection carries every command ([`Redis`]); one that fails or times
//! out is dropped and made anew, and after a failure the store counts as
//! down for [`RETRY_AFTER`], so requests meanwhile do not each wait for a
//! timeout.
//!
//! (The `redis` crate with its tokio support adds about 40 s of build on
//! two cores and 18 crates; the three commands sluice needs fit here.)

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::embedded::{Admit, Item};
use crate::telemetry;

/// Every counter key starts with this.
pub const PREFIX: &str = "sluice:limits:";
/// How long the store counts as down after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Commands waiting for the connection; more are refused as store errors.
const QUEUE: usize = 8192;
/// Most commands sent in one round trip.
const MAX_PIPELINE: usize = 512;
/// Largest reply sluice accepts (a SCAN page, a few counters).
const MAX_REPLY_BYTES: usize = 8 << 20;

/// Check every counter, then reserve: `{0, values...}` when all were below
/// their limits, `{i, used}` for the first that was not (nothing reserved).
/// ARGV holds (limit, reserve 1|0, expire-at) per key.
const ADMIT: &str = r#"
local out = {}
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used >= tonumber(ARGV[3*i-2]) then return {i, used} end
  out[i] = used
end
for i = 1, #KEYS do
  if ARGV[3*i-1] == '1' then
    out[i] = redis.call('INCR', KEYS[i])
    redis.call('EXPIREAT', KEYS[i], ARGV[3*i])
  end
end
table.insert(out, 1, 0)
return out
"#;

/// Add (amount, expire-at) per key; the new values.
const ADD: &str = r#"
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('INCRBY', KEYS[i], ARGV[2*i-1])
  redis.call('EXPIREAT', KEYS[i], ARGV[2*i])
end
return out
"#;

/// `redis://[user:password@]host[:port][/db]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
    user: Option<String>,
    password: Option<String>,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let rest = url.strip_prefix("redis://").ok_or_else(|| {
            format!(
                "`{}` is neither `embedded` nor a redis://host:port/db URL (rediss:// is not supported)",
                redact(url)
            )
        })?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, db)) => (a, db.parse().map_err(|_| format!("database `{db}` is not a number"))?),
            None => (rest, 0),
        };
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| format!("port `{p}` is not a number"));
        let (host, port) = match authority.strip_prefix('[') {
            // [v6 address]:port
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
                match after.strip_prefix(':') {
                    Some(p) => (host, port_of(p)?),
                    None if after.is_empty() => (host, 6379),
                    None => return Err(format!("`{after}` after the host")),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (authority, 6379),
            },
        };
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(auth) => match auth.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(auth.to_string())),
            },
        };
        Ok(RedisUrl { host: host.to_string(), port, db, user, password })
    }

    /// The URL without its password, for logs and `/readyz`.
    pub fn shown(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("redis://{host}:{}/{}", self.port, self.db)
    }
}

fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, rest)) => format!("…@{rest}"),
        None => url.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{0} (not retried for a second)")]
    Down(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("redis answered: {0}")]
    Server(String),
    #[error("unexpected answer from redis: {0}")]
    Protocol(String),
}

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn int(&self) -> Result<u64, RedisError> {
        match self {
            Reply::Int(n) => Ok((*n).max(0) as u64),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| RedisError::Protocol("a counter is not a number".into())),
            Reply::Bulk(None) => Ok(0),
            other => Err(RedisError::Protocol(format!("expected a number, got {other:?}"))),
        }
    }

    fn array(self) -> Result<Vec<Reply>, RedisError> {
        match self {
            Reply::Array(Some(items)) => Ok(items),
            Reply::Error(e) => Err(RedisError::Server(e)),
            other => Err(RedisError::Protocol(format!("expected an array, got {other:?}"))),
        }
    }
}

/// Encode one command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parse one reply from the front of `buf`: `Ok(None)` until it is whole.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, String> {
    if depth > 4 {
        return Err("reply nested too deep".into());
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err("empty reply line".into());
    };
    let line = std::str::from_utf8(line).map_err(|_| "reply line is not UTF-8".to_string())?;
    let after = end + 2;
    let number = || line.parse::<i64>().map_err(|_| format!("`{line}` is not a number"));
    match kind {
        b'+' => Ok(Some((Reply::Status(line.to_string()), after))),
        b'-' => Ok(Some((Reply::Error(line.to_string()), after))),
        b':' => Ok(Some((Reply::Int(number()?), after))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| "bulk length".to_string())?;
            if len > MAX_REPLY_BYTES {
                return Err(format!("bulk reply of {len} bytes"));
            }
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            Ok(Some((Reply::Bulk(Some(buf[after..after + len].to_vec())), after + len + 2)))
        }
        b'*' => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            // Each element takes at least 3 bytes: a bound before allocating.
            let count = usize::try_from(count).map_err(|_| "array length".to_string())?;
            if count > MAX_REPLY_BYTES / 3 {
                return Err(format!("array of {count} elements"));
            }
            let mut items = Vec::with_capacity(count.min(1024));
            let mut at = after;
            for _ in 0..count {
                match parse_at(&buf[at..], depth + 1)? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(format!("unknown reply type {:?}", other as char)),
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    admit_sha: String,
    add_sha: String,
}

impl Conn {
    /// Send `commands` in one write and read their replies in order.
    async fn round_trip(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        let mut out = Vec::new();
        for command in commands {
            let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
            encode(&mut out, &args);
        }
        self.stream.write_all(&out).await?;
        let mut replies = Vec::with_capacity(commands.len());
        while replies.len() < commands.len() {
            match parse(&self.buf).map_err(RedisError::Protocol)? {
                Some((reply, used)) => {
                    self.buf.drain(..used);
                    replies.push(reply);
                }
                None => {
                    if self.buf.len() > MAX_REPLY_BYTES {
                        return Err(RedisError::Protocol("reply too large".into()));
                    }
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(RedisError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
        Ok(replies)
    }
}

#[derive(Clone, Copy)]
enum Script {
    Admit,
    Add,
}

/// What a caller asks of the connection task.
enum Command {
    /// EVALSHA of a script the connection loaded, with (numkeys, keys, args).
    Eval(Script, Vec<Vec<u8>>),
    /// Any other command, as it is sent.
    Raw(Vec<Vec<u8>>),
}

struct Job {
    command: Command,
    reply: oneshot::Sender<Result<Reply, RedisError>>,
}

#[derive(Default)]
struct Health {
    down_since: Option<SystemTime>,
    retry_at: Option<Instant>,
    last_error: String,
}

/// What the callers and the connection task share.
struct Shared {
    url: RedisUrl,
    timeout: Duration,
    health: Mutex<Health>,
}

/// One connection, pipelined: a task owns it and sends the commands that
/// queued up while the previous batch was on its way in one write, then
/// reads their replies in order. Under load many requests share a round
/// trip's system calls; a caller that gives up never leaves a reply unread.
pub(super) struct Redis {
    shared: Arc<Shared>,
    /// Started on first use, in whatever runtime that is.
    jobs: OnceLock<mpsc::Sender<Job>>,
}

impl Redis {
    pub(super) fn new(url: RedisUrl, timeout: Duration) -> Redis {
        metrics::gauge!(telemetry::LIMITS_STORE_UP, "store" => "redis").set(1.0);
        Redis {
            shared: Arc::new(Shared { url, timeout, health: Mutex::new(Health::default()) }),
            jobs: OnceLock::new(),
        }
    }

    pub(super) fn url(&self) -> &RedisUrl {
        &self.shared.url
    }

    /// Why the store is down, and since when; `None` while it answers.
    pub(super) fn problem(&self) -> Option<(SystemTime, String)> {
        let health = self.shared.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.down_since.map(|since| (since, health.last_error.clone()))
    }

    /// Check-and-reserve, as [`super::embedded::Embedded::admit`], in one
    /// round trip.
    pub(super) async fn admit(&self, items: &[Item]) -> Result<Admit, RedisError> {
        let keys: Vec<String> = items.iter().map(|i| format!("{PREFIX}{}", i.key)).collect();
        let mut args = Vec::with_capacity(items.len() * 3);
        for item in items {
            args.push(item.limit.to_string());
            args.push(if item.reserve { "1" } else { "0" }.to_string());
            args.push(item.expires.to_string());
        }
        let reply = self.eval(Script::Admit, &keys, &args).await?.array()?;
        let first = reply.first().ok_or_else(|| RedisError::Protocol("empty admit reply".into()))?.int()?;
        if first == 0 {
            let values = reply[1..].iter().map(Reply::int).collect::<Result<Vec<_>, _>>()?;
            if values.len() != items.len() {
                return Err(RedisError::Protocol("admit reply has the wrong length".into()));
            }
            return Ok(Admit::Admitted(values));
        }
        let index = usize::try_from(first - 1).ok().filter(|i| *i < items.len());
        let index = index.ok_or_else(|| RedisError::Protocol("admit reply names no counter".into()))?;
        let used = reply.get(1).ok_or_else(|| RedisError::Protocol("admit reply lacks the count".into()))?.int()?;
        Ok(Admit::Over { index, used })
    }

    /// Add (key, amount, expires) to each counter; the new values.
    pub(super) async fn add(&self, items: &[(String, u64, u64)]) -> Result<Vec<u64>, RedisError> {
        let keys: Vec<String> = items.iter().map(|(k, _, _)| format!("{PREFIX}{k}")).collect();
        let args: Vec<String> =
            items.iter().flat_map(|(_, amount, expires)| [amount.to_string(), expires.to_string()]).collect();
        let reply = self.eval(Script::Add, &keys, &args).await?.array()?;
        reply.iter().map(Reply::int).collect()
    }

    /// The values of `keys` (absent ones are 0).
    pub(super) async fn get(&self, keys: &[String]) -> Result<Vec<u64>, RedisError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = vec![b"MGET".to_vec()];
        command.extend(keys.iter().map(|k| format!("{PREFIX}{k}").into_bytes()));
        let reply = server_error(self.call(Command::Raw(command)).await?)?.array()?;
        reply.iter().map(Reply::int).collect()
    }

    /// Every key (without the prefix) matching `pattern` (after the prefix).
    pub(super) async fn scan(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let pattern = format!("{PREFIX}{pattern}");
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let command: Vec<Vec<u8>> =
                ["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"].iter().map(|s| s.as_bytes().to_vec()).collect();
            let mut reply = server_error(self.call(Command::Raw(command)).await?)?.array()?.into_iter();
            let (Some(Reply::Bulk(Some(next))), Some(page)) = (reply.next(), reply.next()) else {
                return Err(RedisError::Protocol("SCAN reply".into()));
            };
            for key in page.array()? {
                if let Reply::Bulk(Some(key)) = key {
                    if let Some(k) = String::from_utf8(key).ok().and_then(|k| k.strip_prefix(PREFIX).map(String::from))
                    {
                        keys.push(k);
                    }
                }
            }
            cursor = String::from_utf8(next).map_err(|_| RedisError::Protocol("SCAN cursor".into()))?;
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }

    /// EVALSHA, or EVAL when the server has lost the script.
    async fn eval(&self, script: Script, keys: &[String], args: &[String]) -> Result<Reply, RedisError> {
        let mut rest: Vec<Vec<u8>> = vec![keys.len().to_string().into_bytes()];
        rest.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
        rest.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        match self.call(Command::Eval(script, rest.clone())).await? {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => {
                let body = match script {
                    Script::Admit => ADMIT,
                    Script::Add => ADD,
                };
                let mut command = vec![b"EVAL".to_vec(), body.as_bytes().to_vec()];
                command.extend(rest);
                server_error(self.call(Command::Raw(command)).await?)
            }
            other => server_error(other),
        }
    }

    /// One command through the connection task; fails at once while the
    /// store is marked down.
    async fn call(&self, command: Command) -> Result<Reply, RedisError> {
        if let Some(down) = self.shared.down_now() {
            return Err(down);
        }
        let jobs = self.jobs.get_or_init(|| {
            let (jobs, queue) = mpsc::channel(QUEUE);
            tokio::spawn(run(self.shared.clone(), queue));
            jobs
        });
        let (reply, answer) = oneshot::channel();
        jobs.try_send(Job { command, reply })
            .map_err(|_| RedisError::Protocol("too many commands waiting for redis".into()))?;
        // The task keeps its own time; this covers a wait in the queue too.
        match tokio::time::timeout(self.shared.timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RedisError::Protocol("the redis connection task ended".into())),
            Err(_) => Err(RedisError::Timeout(self.shared.timeout.as_millis() as u64 * 2)),
        }
    }
}

/// The connection task: batches of queued commands, one round trip each.
async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Job>) {
    let mut conn: Option<Conn> = None;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_PIPELINE {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Callers that gave up need no answer.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        if let Some(down) = shared.down_now() {
            for job in batch {
                let _ = job.reply.send(Err(RedisError::Down(down.to_string())));
            }
            continue;
        }
        let result = tokio::time::timeout(shared.timeout, async {
            if conn.is_none() {
                conn = Some(shared.connect().await?);
            }
            let c = conn.as_mut().ok_or_else(|| RedisError::Protocol("no connection".into()))?;
            let commands: Vec<Vec<Vec<u8>>> = batch
                .iter()
                .map(|job| match &job.command {
                    Command::Raw(command) => command.clone(),
                    Command::Eval(script, rest) => {
                        let sha = match script {
                            Script::Admit => &c.admit_sha,
                            Script::Add => &c.add_sha,
                        };
                        let mut command = vec![b"EVALSHA".to_vec(), sha.as_bytes().to_vec()];
                        command.extend(rest.iter().cloned());
                        command
                    }
                })
                .collect();
            c.round_trip(&commands).await
        })
        .await
        .unwrap_or(Err(RedisError::Timeout(shared.timeout.as_millis() as u64)));
        match result {
            Ok(replies) => {
                shared.up();
                for (job, reply) in batch.into_iter().zip(replies) {
                    let _ = job.reply.send(Ok(reply));
                }
            }
            Err(e) => {
                // Whatever was half sent or half read goes with the connection.
                conn = None;
                shared.down(&e);
                let message = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(RedisError::Down(message.clone())));
                }
            }
        }
    }
}

impl Shared {
    /// The store's error while it counts as down.
    fn down_now(&self) -> Option<RedisError> {
        let health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.retry_at.filter(|at| Instant::now() < *at).map(|_| RedisError::Down(health.last_error.clone()))
    }

    /// Connect, authenticate, select the database and load both scripts,
    /// in one round trip after the TCP handshake.
    async fn connect(&self) -> Result<Conn, RedisError> {
        let stream = TcpStream::connect((self.url.host.as_str(), self.url.port)).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn { stream, buf: Vec::new(), admit_sha: String::new(), add_sha: String::new() };
        let mut commands: Vec<Vec<Vec<u8>>> = Vec::new();
        if let Some(password) = &self.url.password {
            let mut auth = vec![b"AUTH".to_vec()];
            auth.extend(self.url.user.iter().map(|u| u.as_bytes().to_vec()));
            auth.push(password.as_bytes().to_vec());
            commands.push(auth);
        }
        if self.url.db != 0 {
            commands.push(vec![b"SELECT".to_vec(), self.url.db.to_string().into_bytes()]);
        }
        for body in [ADMIT, ADD] {
            commands.push(vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), body.as_bytes().to_vec()]);
        }
        let mut replies = conn.round_trip(&commands).await?;
        let add = replies.pop();
        let admit = replies.pop();
        for reply in &replies {
            if let Reply::Error(e) = reply {
                return Err(RedisError::Server(e.clone()));
            }
        }
        match (admit, add) {
            (Some(Reply::Bulk(Some(admit))), Some(Reply::Bulk(Some(add)))) => {
                conn.admit_sha = String::from_utf8_lossy(&admit).into_owned();
                conn.add_sha = String::from_utf8_lossy(&add).into_owned();
                Ok(conn)
            }
            (Some(Reply::Error(e)), _) | (_, Some(Reply::Error(e))) => Err(RedisError::Server(e)),
            _ => Err(RedisError::Protocol("SCRIPT LOAD".into())),
        }
    }

    fn up(&self) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if health.down_since.take().is_some() {
            health.retry_at = None;
            tracing::info!(store = %self.url.shown(), "limits store answers again");
            metrics::gauge!(telemetry::LIMITS_STORE_UP, "store" => "redis").set(1.0);
        }
    }

    fn down(&self, error: &RedisError) {
        metrics::counter!(telemetry::LIMITS_STORE_ERRORS, "store" => "redis").increment(1);
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if health.down_since.is_none() {
            health.down_since = Some(SystemTime::now());
            tracing::warn!(store = %self.url.shown(), error = %error, "limits store unreachable");
            metrics::gauge!(telemetry::LIMITS_STORE_UP, "store" => "redis").set(0.0);
        }
        health.retry_at = Some(Instant::now() + RETRY_AFTER);
        health.last_error = error.to_string();
    }
}

/// A script's error reply as an error.
fn server_error(reply: Reply) -> Result<Reply, RedisError> {
    match reply {
        Reply::Error(e) => Err(RedisError::Server(e)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 2));
        let u = RedisUrl::parse("redis://:s3cret@cache.internal").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db, u.password.as_deref()), ("cache.internal", 6379, 0, Some("s3cret")));
        assert_eq!(u.shown(), "redis://cache.internal:6379/0");
        let u = RedisUrl::parse("redis://[::1]:7000/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!(u.shown(), "redis://[::1]:7000/0");
        assert!(RedisUrl::parse("rediss://h:1").is_err());
        assert!(RedisUrl::parse("redis://h:port").is_err());
        assert!(RedisUrl::parse("redis://h/x").is_err());
        let err = RedisUrl::parse("http://u:pw@h").unwrap_err();
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let whole = b"*3\r\n:0\r\n$2\r\n42\r\n$-1\r\n";
        let (reply, used) = parse(whole).unwrap().unwrap();
        assert_eq!(used, whole.len());
        assert_eq!(
            reply,
            Reply::Array(Some(vec![Reply::Int(0), Reply::Bulk(Some(b"42".to_vec())), Reply::Bulk(None)]))
        );
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse(b"-NOSCRIPT x\r\n").unwrap().unwrap().0, Reply::Error("NOSCRIPT x".into()));
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").is_err(), "too deep");
    }

    #[test]
    fn commands_encode_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}

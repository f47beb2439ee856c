//! Test support: the fake provider and a `sluice serve` child process wired
//! to it (its CA trusted, api.openai.com / api.anthropic.com pinned to it).

#![allow(dead_code)]

pub mod fake_provider;
pub mod redis;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub use fake_provider::FakeProvider;

pub const OPENAI_UPSTREAM_KEY: &str = "sk-upstream-openai-key";
pub const ANTHROPIC_UPSTREAM_KEY: &str = "sk-ant-upstream-anthropic-key";

/// The binary under test; `SLUICE_BIN` pins another copy (the build
/// directory's `sluice` is shared by every checkout that builds into it,
/// so long runs such as `scripts/crash-loop` test a copy of their own).
pub fn sluice_bin() -> String {
    std::env::var("SLUICE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_string())
}

/// The model `scripts/fetch-model` puts in place (`.ci/run` runs it first).
pub fn smollm2() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is missing: run scripts/fetch-model", path.display());
    path
}

/// A `local:` section for the embedded engine with the default model.
pub fn embedded_local(max_concurrent: usize, queue: usize) -> String {
    format!(
        "local: {{ backend: embedded, model: \"{}\", max_concurrent: {max_concurrent}, queue: {queue}, max_tokens_cap: 48 }}\n",
        smollm2().display()
    )
}

pub fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

pub fn free_port() -> u16 {
    // Bound then released: a tiny race with other processes, acceptable in tests.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How to set up one sluice process.
#[derive(Clone)]
pub struct Setup {
    /// Extra top-level YAML appended to the generated config.
    pub extra_config: String,
    /// YAML for the `identity:` section.
    pub identity: String,
    /// YAML for extra keys under `upstream:` (indented by the caller with 2 spaces).
    pub upstream_extra: String,
    /// Policy files written into the policy dir, replacing the repo's defaults when non-empty
    /// (names may include a folder: `profiles/strict.yaml`).
    pub policies: Vec<(&'static str, String)>,
    /// Point the providers at this address instead of the fake (e.g. a closed port).
    pub upstream_override: Option<SocketAddr>,
    /// Put the audit log on a tmpfs of this size (needs root), so a test can fill it.
    pub audit_tmpfs: Option<&'static str>,
    /// Set `pass_client_key: true` on both providers.
    pub pass_client_key: bool,
    /// The `local:` section (YAML, top level). Defaults to no local model.
    pub local: String,
    /// Extra keys for the `proxy:` flow map (e.g. `allowed_ports: [443, 8443]`).
    pub proxy: String,
    /// Extra `upstream.resolve` pins: `host:port` (or `host`) to an address.
    pub resolve: Vec<(String, SocketAddr)>,
    /// Extra keys for the `gateway:` flow map (e.g. `max_connections: 16`).
    pub gateway: String,
    /// Extra keys for the `audit:` flow map (e.g. `durability: batched`,
    /// `checkpoint_every_records: 2`).
    pub audit: String,
    /// `providers.gemini.models`; empty leaves the Gemini provider out of
    /// the config (sluice's defaults then apply).
    pub gemini_models: Vec<&'static str>,
    /// Extra environment variables for the child (e.g. a HEC token).
    pub env: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            extra_config: String::new(),
            identity: "identity: { anonymous_team: default }\n".into(),
            upstream_extra: String::new(),
            policies: Vec::new(),
            upstream_override: None,
            audit_tmpfs: None,
            pass_client_key: false,
            local: "local: { backend: none }\n".into(),
            proxy: String::new(),
            resolve: Vec::new(),
            gateway: String::new(),
            audit: String::new(),
            gemini_models: Vec::new(),
            env: Vec::new(),
        }
    }
}

pub struct SluiceProc {
    child: Option<Child>,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub proxy: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The extra environment the child was started with, for `restart`.
    env: Vec<(String, String)>,
}

impl SluiceProc {
    pub async fn start(fake: &FakeProvider, setup: Setup) -> SluiceProc {
        Self::start_ready(fake, setup, None).await
    }

    /// Also trust another fake's CA (an external local backend).
    pub async fn start_with_extra_ca(fake: &FakeProvider, setup: Setup, extra_ca_pem: &str) -> SluiceProc {
        Self::start_ready(fake, setup, Some(extra_ca_pem)).await
    }

    /// Launch and wait for /readyz. The ports were free when picked but
    /// another test may take one before sluice binds it: then start again
    /// on fresh ports.
    async fn start_ready(fake: &FakeProvider, setup: Setup, extra_ca_pem: Option<&str>) -> SluiceProc {
        for _ in 0..3 {
            let mut proc = Self::launch(fake, setup.clone(), extra_ca_pem);
            if proc.wait_ready_or_port_clash().await {
                return proc;
            }
        }
        panic!("three port clashes in a row");
    }

    /// [`SluiceProc::wait_ready`], but false when sluice could not bind a port.
    async fn wait_ready_or_port_clash(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = self.log();
                if log.contains("Address already in use") {
                    self.child = None;
                    return false;
                }
                panic!("sluice exited early ({status}):\n{log}");
            }
            if let Ok(r) = client.get(format!("http://{}/readyz", self.admin)).send().await {
                if r.status().is_success() {
                    return true;
                }
            }
            assert!(Instant::now() < deadline, "sluice not ready in time:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start without waiting for /readyz (for tests of a sluice that never gets ready).
    pub async fn start_unready(fake: &FakeProvider, setup: Setup) -> SluiceProc {
        let proc = Self::launch(fake, setup, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(proc.admin).is_err() {
            assert!(Instant::now() < deadline, "admin listener never came up:\n{}", proc.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proc
    }

    fn launch(fake: &FakeProvider, setup: Setup, extra_ca_pem: Option<&str>) -> SluiceProc {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("fake-ca.pem");
        let mut pem = fake.ca_pem().to_string();
        if let Some(extra) = extra_ca_pem {
            pem.push('\n');
            pem.push_str(extra);
        }
        std::fs::write(&ca, pem).unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        if setup.policies.is_empty() {
            copy_dir(&repo_policies(), &policies);
        } else {
            for (name, text) in &setup.policies {
                let path = policies.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
        }
        if let Some(size) = setup.audit_tmpfs {
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).unwrap();
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(status.success(), "mounting a tmpfs for the audit log failed");
        }
        let gateway = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let proxy_extra = if setup.proxy.is_empty() { String::new() } else { format!(", {}", setup.proxy) };
        let gateway_extra = if setup.gateway.is_empty() { String::new() } else { format!(", {}", setup.gateway) };
        let audit_extra = if setup.audit.is_empty() { String::new() } else { format!(", {}", setup.audit) };
        let upstream = setup.upstream_override.unwrap_or(fake.addr());
        let pins: String = setup.resolve.iter().map(|(host, addr)| format!(", \"{host}\": \"{addr}\"")).collect();
        let gemini = if setup.gemini_models.is_empty() {
            String::new()
        } else {
            format!(
                "  gemini: {{ base_url: \"https://generativelanguage.googleapis.com\", models: [{}] }}\n",
                setup.gemini_models.join(", ")
            )
        };
        let config = format!(
            "gateway: {{ listen: \"{gateway}\"{gateway_extra} }}\n\
             admin: {{ listen: \"{admin}\" }}\n\
             proxy: {{ listen: \"{proxy}\"{proxy_extra} }}\n\
             ca: {{ dir: data/ca }}\n\
             policies_dir: policies\n\
             audit: {{ dir: data/audit{audit_extra} }}\n\
             {identity}\
             providers:\n\
             \x20 openai: {{ base_url: \"https://api.openai.com\", api_key_env: TEST_OPENAI_KEY, pass_client_key: {pass} }}\n\
             \x20 anthropic: {{ base_url: \"https://api.anthropic.com\", api_key_env: TEST_ANTHROPIC_KEY, pass_client_key: {pass} }}\n\
             {gemini}\
             upstream:\n\
             \x20 extra_ca_file: fake-ca.pem\n\
             \x20 resolve: {{ \"api.openai.com:443\": \"{upstream}\", \"api.anthropic.com:443\": \"{upstream}\", \"bedrock-runtime.us-east-1.amazonaws.com:443\": \"{upstream}\", \"generativelanguage.googleapis.com:443\": \"{upstream}\"{pins} }}\n\
             {upstream_extra}\
             {local}\
             {extra}",
            identity = setup.identity,
            upstream_extra = setup.upstream_extra,
            extra = setup.extra_config,
            pass = setup.pass_client_key,
            local = setup.local,
        );
        let config_path = dir.path().join("sluice.yaml");
        std::fs::write(&config_path, config).unwrap();
        let child = spawn_serve(&config_path, &setup.env, &dir.path().join("sluice.log"));
        SluiceProc { child: Some(child), gateway, admin, proxy, dir, config: config_path, env: setup.env }
    }

    /// Start again after [`SluiceProc::stop`], same config and data dir
    /// (the log file is appended to).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.child = Some(spawn_serve(&self.config, &self.env, &self.dir.path().join("sluice.log")));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        // The ports of a restart are the first start's: a clash is fatal.
        assert!(self.wait_ready_or_port_clash().await, "a port of the first start was taken");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    /// The proxy's CA certificate (PEM), as clients must trust it.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/ca/ca.pem")).expect("sluice created its CA")
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("data/ca/ca.pem")
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("data/audit")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as a crash or an OOM kill would end it; nothing is flushed.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("already stopped");
        // `Child::kill` is SIGKILL on Unix.
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sluice did not stop after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every audit record, via the CLI (stops the server first: sled holds a lock).
    pub fn audit_records(&mut self) -> Vec<serde_json::Value> {
        if self.child.is_some() {
            assert!(self.stop().success(), "unclean exit:\n{}", self.log());
        }
        let out = cli(&["audit", "query", "--json", "--dir"], Some(&self.audit_dir()));
        assert!(out.status.success(), "audit query failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for SluiceProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let data = self.dir.path().join("data");
        // Only succeeds where the test mounted a tmpfs; harmless otherwise.
        let _ = Command::new("umount").arg("-l").arg(&data).stderr(Stdio::null()).status();
    }
}

fn spawn_serve(config: &Path, env: &[(String, String)], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(sluice_bin())
        .args(["serve", "--config"])
        .arg(config)
        .env("TEST_OPENAI_KEY", OPENAI_UPSTREAM_KEY)
        .env("TEST_ANTHROPIC_KEY", ANTHROPIC_UPSTREAM_KEY)
        .env("SLUICE_LOG", std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sluice")
}

/// Copy a directory tree (the repo's policies, with `profiles/`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Whether this process may mount filesystems (root).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Run the sluice CLI with `args` (plus an optional trailing path).
pub fn cli(args: &[&str], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(args);
    if let Some(p) = path {
        cmd.arg(p);
    }
    cmd.output().expect("run sluice cli")
}

pub fn chat_body(prompt: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": prompt}
        ]
    })
}

pub fn messages_body(prompt: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}]
    })
}

pub fn header<'a>(rec: &'a fake_provider::Recorded, name: &str) -> Option<&'a str> {
    rec.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Drive `fut` while releasing the fake's held streams every 50 ms (a held
/// stream waits for a release that comes after its request arrived).
pub async fn releasing<F: std::future::Future>(fake: &FakeProvider, fut: F) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => fake.release_streams(),
        }
    }
}

/// Rewrite one stored audit record in place, as someone with write access
/// to the files could: replace `from` with `to` in record `seq`'s line
/// (records are stored in blocks, one compact JSON record per line).
pub fn edit_audit_record(dir: &Path, seq: u64, from: &str, to: &str) {
    let db = sled::open(dir).unwrap();
    let prefix = format!("{{\"seq\":{seq},");
    let (key, old) = db
        .iter()
        .map(Result::unwrap)
        .find(|(_, v)| String::from_utf8_lossy(v).lines().any(|l| l.starts_with(&prefix)))
        .unwrap_or_else(|| panic!("record {seq} stored"));
    let edited: Vec<String> = String::from_utf8(old.to_vec())
        .unwrap()
        .lines()
        .map(|l| if l.starts_with(&prefix) { l.replace(from, to) } else { l.to_string() })
        .collect();
    let edited = edited.join("\n");
    assert_ne!(edited.as_bytes(), &old[..], "`{from}` is not in record {seq}");
    db.insert(key, edited.as_bytes()).unwrap();
    db.flush().unwrap();
}

/// A reqwest client using sluice as its proxy (as `alice` with `token`),
/// trusting sluice's CA only.
pub fn proxied_client(proc: &SluiceProc, http1_only: bool, token: Option<&str>) -> reqwest::Client {
    let mut proxy = reqwest::Proxy::all(format!("http://{}", proc.proxy)).unwrap();
    if let Some(token) = token {
        proxy = proxy.basic_auth("alice", token);
    }
    let ca = reqwest::Certificate::from_pem(proc.ca_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .proxy(proxy)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// A client whose connections come from `ip` (any 127.x.y.z is this
/// machine's loopback), for callers identified by their network.
pub fn client_from(ip: &str) -> reqwest::Client {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(60)).build().unwrap()
}

/// `sluice budget status --json` for this sluice's config, as the CLI
/// prints it (from the admin listener while sluice runs, from the store
/// when it does not).
pub fn budget_status(proc: &SluiceProc, team: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["budget", "status", "--json", "--config"]).arg(&proc.config);
    if let Some(team) = team {
        cmd.args(["--team", team]);
    }
    let out = cmd.output().expect("run sluice budget status");
    assert!(out.status.success(), "budget status failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `used` of one row of a budget report (the team's own when `user` is None).
pub fn budget_used(report: &serde_json::Value, team: &str, user: Option<&str>, budget: &str) -> Option<u64> {
    report["rows"].as_array()?.iter().find_map(|r| {
        (r["team"] == team && r["user"].as_str() == user && r["budget"] == budget).then(|| r["used"].as_u64()).flatten()
    })
}

/// Wait, if needed, until the current UTC minute has at least 30 seconds
/// left, so that a burst of requests counted per minute falls in one
/// window.
pub async fn early_in_a_minute() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let into = now.as_secs() % 60;
    if into >= 30 {
        tokio::time::sleep(Duration::from_secs(60 - into) + Duration::from_millis(200)).await;
    }
}

/// Wait, if needed, until the current UTC day has at least two minutes
/// left, so a test of a daily budget does not see it reset.
pub async fn early_in_a_day() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let into = now.as_secs() % 86_400;
    if into >= 86_400 - 120 {
        tokio::time::sleep(Duration::from_secs(86_400 - into) + Duration::from_millis(200)).await;
    }
}

/// RFC 4180 as a spreadsheet reads it: quoted fields, `""` for a quote,
/// CRLF between records.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field, mut quoted) = (Vec::new(), Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (_, c) => field.push(c),
        }
    }
    assert!(row.is_empty() && field.is_empty(), "the last record has no CRLF: {text}");
    rows
}

//! The `sluice` command line: serve, policy, audit, shadow, token, ca, budget.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use sluice::audit::remote::AuditSource;
use sluice::audit::{AuditFilter, StoredRecord};
use sluice::config::Config;
use sluice::inspect::Detectors;
use sluice::pipeline::Sluice;
use sluice::policy::reload::Policies;
use sluice::policy::Signals;

// glibc malloc was ~12% of the gateway's CPU under load (malloc_consolidate
// on the many short-lived request buffers); mimalloc's thread-local free
// lists cut 10% of all instructions per request (BENCHMARKS.md). Built with
// `no_thp`: mimalloc's own huge-page advice tripled the idle process's
// resident memory (99 vs 34 MiB) for no measurable speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Policy-driven egress gate for LLM traffic")]
struct Cli {
    /// Config file (sluice.yaml). Without one, sluice runs on its embedded defaults.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway, forward proxy and admin listeners.
    Serve,
    /// Lint and try out team policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Report the AI services people use, from the audit log.
    #[command(subcommand)]
    Shadow(ShadowCommand),
    /// Make and hash sluice tokens for `identity.tokens`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The CA that signs certificates for intercepted hosts.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Budgets and rate limits (`limits:` in team policies).
    #[command(subcommand)]
    Budget(BudgetCommand),
}

#[derive(Subcommand)]
enum BudgetCommand {
    /// Use of each team's budgets, and of each user's, in the current
    /// windows: from the running sluice's admin listener, or from the
    /// store when sluice is not running.
    Status {
        #[arg(long)]
        team: Option<String>,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create an ECDSA P-256 CA in `ca.dir`, name-constrained to the
    /// intercepted hosts unless `ca.name_constraints` is false.
    Init {
        /// Replace an existing CA (clients must then trust the new one).
        #[arg(long)]
        force: bool,
    },
    /// Print the CA certificate (PEM) for clients' trust stores.
    Export,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate every policy file; errors name file, line and reason.
    Check {
        /// Policy directory (default: `policies_dir` from the config).
        dir: Option<PathBuf>,
    },
    /// Show the decision a team's policy makes for a prompt.
    Test {
        #[arg(long)]
        team: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value = "gpt-4o")]
        model: String,
        #[arg(long, default_value = "openai")]
        provider: String,
        /// Policy directory (default: `policies_dir` from the config).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Messages in the conversation so far (the prompt is the last).
        #[arg(long, default_value_t = 1)]
        turns: u32,
        /// Assistant tool calls earlier in the conversation.
        #[arg(long, default_value_t = 0)]
        tool_steps: u32,
        /// The request offers tools.
        #[arg(long)]
        tools: bool,
        #[arg(long)]
        stream: bool,
        /// Treat the conversation as one kept local earlier (sticky_local).
        #[arg(long)]
        sticky: bool,
        #[arg(long)]
        json: bool,
    },
    /// Decide the recorded requests of a period again under candidate
    /// policies (without their prompts) and show what would change.
    Replay {
        /// The candidate policy directory, checked as `policy check` does.
        #[arg(long)]
        dir: PathBuf,
        /// RFC 3339 time, or a duration back from now (`15m`, `2h`, `7d`).
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long)]
        until: Option<String>,
        /// Only this team's requests.
        #[arg(long)]
        team: Option<String>,
        /// List up to N changed requests (sequence number, team, old and new decision).
        #[arg(long, default_value_t = 0)]
        show: usize,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Audit log directory (default: `audit.dir` from the config).
        #[arg(long)]
        audit_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct AuditDir {
    /// Audit log directory (default: `audit.dir` from the config).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List records, oldest first.
    Query {
        /// RFC 3339 time, or a duration back from now (`15m`, `2h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// cloud | local | block | error | sluice
        #[arg(long)]
        decision: Option<String>,
        /// Only the newest N records.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: AuditDir,
    },
    /// Check the hash chain and the signed checkpoints; exits 1 and names
    /// the first bad record, a rewritten chain, a truncated tail or an
    /// unproven front.
    Verify {
        /// A file of signed checkpoints kept outside the data directory
        /// (`audit.checkpoints_file`, or ones saved from `audit checkpoint`),
        /// checked on top of those the log stores.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The verifier key to check signatures with
        /// (`sluice audit checkpoint --public-key`); without it, the key in
        /// the audit directory, which whoever rewrites the log can replace.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        dir: AuditDir,
    },
    /// Print the latest signed checkpoint of the chain head, for an auditor
    /// to keep.
    Checkpoint {
        /// Print the verifier key instead (`<name>+<key id>+<key>`), to pin
        /// for `audit verify --key`.
        #[arg(long)]
        public_key: bool,
        #[command(flatten)]
        dir: AuditDir,
    },
    /// Write records, oldest first, for a SIEM: JSON lines, CSV, or HEC
    /// events (`curl --data-binary @FILE` to Splunk's /services/collector).
    Export {
        /// RFC 3339 time, or a duration back from now (`15m`, `2h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// HEC `host` (default: this machine's host name).
        #[arg(long)]
        host: Option<String>,
        /// HEC `index` (default: none, the token's default index).
        #[arg(long, default_value = "")]
        index: String,
        /// HEC `source`.
        #[arg(long, default_value = sluice::export::SOURCE)]
        source: String,
        /// Write here (created owner-only) instead of to stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        dir: AuditDir,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// One JSON object per record: the event's CIM and sluice fields.
    Jsonl,
    /// RFC 4180 with a header row; cells never start a formula.
    Csv,
    /// One Splunk HEC event per line (`time`, `host`, `source`, `sourcetype`, `index`, `event`).
    Hec,
}

#[derive(Subcommand)]
enum ShadowCommand {
    /// Per AI app: users, teams, requests, bytes up and down, first and last
    /// seen, sanctioned, risk notes, personal accounts, model downloads.
    /// Sorted by bytes sent out, most first.
    Report {
        /// RFC 3339 time, or a duration back from now (`30m`, `24h`, `7d`).
        #[arg(long, default_value = "7d")]
        since: String,
        /// End of the period, in the same forms (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Only this team's usage.
        #[arg(long)]
        team: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        #[command(flatten)]
        dir: AuditDir,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    /// Aligned columns for a person.
    Table,
    /// An array of objects, one per app, raw numbers.
    Json,
    /// RFC 4180, one row per app, lists joined with `;`.
    Csv,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print the SHA-256 of a token, as `identity.tokens[].sha256` wants it.
    Hash { token: String },
    /// Make a new random token and print it with its config entry.
    New {
        #[arg(long)]
        team: String,
        #[arg(long)]
        user: String,
    },
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in a log file they are
    // noise, and styling every request span's fields costs measurable CPU.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Policy(PolicyCommand::Check { dir }) => {
            policy_check(dir.as_deref().unwrap_or(&config.policies_dir), &config.shadow)
        }
        Command::Policy(PolicyCommand::Test {
            team,
            prompt,
            model,
            provider,
            dir,
            turns,
            tool_steps,
            tools,
            stream,
            sticky,
            json,
        }) => {
            let dir = dir.clone().unwrap_or_else(|| config.policies_dir.clone());
            let context = TestContext { turns, tool_steps, tools, stream, sticky };
            policy_test(&config, &dir, &team, &prompt, &model, &provider, &context, json)
        }
        Command::Policy(PolicyCommand::Replay { dir, since, until, team, show, json, audit_dir }) => {
            let filter = AuditFilter {
                since_ms: Some(parse_time(&since)?),
                until_ms: until.as_deref().map(parse_time).transpose()?,
                team,
                ..AuditFilter::default()
            };
            policy_replay(&config, &dir, audit_dir.as_deref(), &filter, show, json)
        }
        Command::Audit(AuditCommand::Query { since, until, team, decision, limit, json, dir }) => {
            let filter = AuditFilter {
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                team,
                decision,
                limit,
            };
            audit_query(&audit_open(dir.dir.as_deref(), &config)?, &filter, json)
        }
        Command::Audit(AuditCommand::Verify { checkpoints, key, dir }) => {
            let source = audit_open(dir.dir.as_deref(), &config)?;
            audit_verify(&source, &config.audit.origin(), checkpoints.as_deref(), key.as_deref())
        }
        Command::Audit(AuditCommand::Checkpoint { public_key, dir }) => {
            audit_checkpoint(dir.dir.as_deref(), &config, public_key)
        }
        Command::Audit(AuditCommand::Export { since, until, team, format, host, index, source, output, dir }) => {
            let filter = AuditFilter {
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                team,
                ..AuditFilter::default()
            };
            let meta = sluice::export::HecMeta { host: host.unwrap_or_else(host_name), source, index };
            let source = audit_open(dir.dir.as_deref(), &config)?;
            audit_export(&source, &filter, format, &meta, output.as_deref())
        }
        Command::Shadow(ShadowCommand::Report { since, until, team, format, dir }) => {
            let filter = AuditFilter {
                since_ms: Some(parse_time(&since)?),
                until_ms: until.as_deref().map(parse_time).transpose()?,
                team,
                ..AuditFilter::default()
            };
            let source = audit_open(dir.dir.as_deref(), &config)?;
            shadow_report(&source, &config.shadow, &filter, format)
        }
        Command::Token(TokenCommand::Hash { token }) => {
            println!("{}", sluice::identity::hash_token(&token));
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::New { team, user }) => token_new(&team, &user),
        Command::Ca(CaCommand::Init { force }) => {
            let files = sluice::ca::init(&config.ca.dir, &constrained_to(&config), force)?;
            println!("CA certificate: {}", files.cert.display());
            println!("CA key (0600):  {}", files.key.display());
            println!("Give clients the certificate: sluice ca export > sluice-ca.pem");
            Ok(ExitCode::SUCCESS)
        }
        Command::Budget(BudgetCommand::Status { team, json }) => budget_status(&config, team.as_deref(), json),
        Command::Ca(CaCommand::Export) => {
            let pem = sluice::ca::export(&config.ca.dir)
                .with_context(|| format!("no CA in {} (run `sluice ca init`)", config.ca.dir.display()))?;
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The intercept patterns the CA is limited to; none means unconstrained.
fn constrained_to(config: &Config) -> Vec<String> {
    if config.ca.name_constraints {
        config.proxy.intercept.clone()
    } else {
        Vec::new()
    }
}

/// Load the proxy's CA, creating it on first start, and refuse to start if
/// it cannot sign for every intercepted host.
fn proxy_leaves(config: &Config) -> Result<sluice::ca::LeafCache> {
    let files = sluice::ca::CaFiles::in_dir(&config.ca.dir);
    if !files.cert.exists() && !files.key.exists() {
        sluice::ca::init(&config.ca.dir, &constrained_to(config), false)?;
        tracing::info!(cert = %files.cert.display(), "created the proxy CA; clients must trust it (`sluice ca export`)");
    }
    let authority = sluice::ca::Authority::load(&config.ca.dir)?;
    let uncovered = authority.uncovered(&config.proxy.intercept);
    if !uncovered.is_empty() {
        bail!(
            "the CA in {} cannot sign for intercepted hosts {}: its name constraints predate them; re-create it with `sluice ca init --force`",
            config.ca.dir.display(),
            uncovered.join(", ")
        );
    }
    let validity = Duration::from_secs(config.proxy.leaf_validity_hours.max(1) * 3600);
    Ok(sluice::ca::LeafCache::new(authority, config.proxy.leaf_cache_size, validity))
}

fn serve(config: Config) -> Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let metrics = sluice::telemetry::install()?;
        sluice::telemetry::register_known(&config);
        let gateway_addr = config.gateway.listen;
        let admin_addr = config.admin.listen;
        let proxy_addr = config.proxy.enabled.then_some(config.proxy.listen);
        let leaves = proxy_addr.map(|_| proxy_leaves(&config)).transpose()?;
        // Before the log opens, which would quietly tighten a key file that
        // others could read instead of refusing it.
        let signer = sluice::audit::keys::load_or_create_signer(&config.audit.dir, &config.audit.origin())?;
        let checkpoint_settings = sluice::audit::CheckpointSettings::of(&config.audit);
        let sluice = Sluice::build(config)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Reloads on SIGHUP and on file changes; SIGHUP is handled from here on.
        let _reloader = sluice.policies().watch(stop_rx.clone());
        let checkpointer =
            sluice::audit::Checkpointer::start(sluice.audit().log().clone(), signer, checkpoint_settings)
                .context("cannot start the checkpoint thread")?;
        // After the build, which created the audit directory the token goes in.
        let token = sluice::audit::remote::AdminToken::for_serve(&sluice.config().audit.dir)?;
        let audit_access = sluice::ingress::admin::audit::AuditAccess::new(sluice.audit().log().clone(), token);
        if let Some(hec) = &sluice.config().export.splunk_hec {
            sluice::export::splunk::start(sluice.audit().log().clone(), hec, &sluice.config().upstream, host_name())?;
        }
        let gateway = tokio::net::TcpListener::bind(gateway_addr)
            .await
            .with_context(|| format!("cannot listen on {gateway_addr} (gateway)"))?;
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot listen on {admin_addr} (admin)"))?;
        let proxy = match proxy_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (proxy)"))?,
            ),
            None => None,
        };
        tracing::info!(gateway = %gateway_addr, admin = %admin_addr, proxy = ?proxy_addr, "sluice is serving");

        let upkeep = metrics.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            let _ = stop_tx.send(true);
        });
        let admin_task =
            tokio::spawn(sluice::ingress::admin::run(sluice.clone(), metrics, audit_access, admin, stop_rx.clone()));
        let proxy_task = match (proxy, leaves) {
            (Some(listener), Some(leaves)) => {
                let proxy = sluice::ingress::proxy::Proxy::new(sluice.clone(), leaves, stop_rx.clone());
                Some(tokio::spawn(sluice::ingress::proxy::run(proxy, listener)))
            }
            _ => None,
        };
        sluice::ingress::gateway::run(sluice.clone(), gateway, stop_rx).await;
        if let Some(task) = proxy_task {
            let _ = task.await;
        }
        let _ = admin_task.await;
        sluice.audit().flush().context("cannot flush the audit log")?;
        sluice.limits().drain(Duration::from_secs(2)).await;
        sluice.limits().flush().context("cannot flush the limits counters")?;
        // After the flush, so the last checkpoint names the last record.
        checkpointer.finish();
        tracing::info!(records = sluice.audit().log().len(), "audit log flushed; bye");
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops sluice");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The same validation `serve` applies at start-up and on every reload
/// (the same function), against the same catalog of AI apps (the shipped
/// one plus `shadow.catalog_files`).
fn policy_check(dir: &Path, shadow: &sluice::config::ShadowConfig) -> Result<ExitCode> {
    match Policies::load(dir, shadow) {
        Ok(policies) => {
            let set = policies.set();
            let teams: Vec<&str> = set.teams().collect();
            println!("{}: {} team policies OK ({})", dir.display(), set.len(), teams.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s) in {}", errors.0.len(), dir.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// The conversation around a `policy test` prompt.
struct TestContext {
    turns: u32,
    tool_steps: u32,
    tools: bool,
    stream: bool,
    sticky: bool,
}

#[allow(clippy::too_many_arguments)]
fn policy_test(
    config: &Config,
    dir: &Path,
    team: &str,
    prompt: &str,
    model: &str,
    provider: &str,
    context: &TestContext,
    json: bool,
) -> Result<ExitCode> {
    // Loaded as `serve` loads it, so the same files load the same way.
    let policies = Policies::load(dir, &config.shadow)
        .map_err(|e| anyhow::anyhow!("policies in {} are invalid:\n{e}", dir.display()))?;
    let Some(policy) = policies.team(team) else {
        bail!("no policy for team `{team}` in {}", dir.display());
    };
    let dictionary = policies.dictionary(team);
    // The prompt goes through the server's own inspection, as the user
    // message of an OpenAI chat request.
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]}).to_string();
    let shape = sluice::wire::shapes::Shape::chat(sluice::wire::Dialect::OpenAiChat);
    let (extracted, scanned, _) = sluice::pipeline::scan_body(
        &Detectors::with_phone_regions(config.inspect.phone_regions()),
        dictionary,
        shape,
        "/v1/chat/completions",
        body.as_bytes(),
        "application/json",
        None,
    )?;
    let findings = policy.relevant_findings(&scanned);
    let prompt_tokens = sluice::wire::CanonicalRequest::estimated_prompt_tokens(&extracted.request.text_segments());
    let signals = Signals {
        // All of them, as `serve` passes them: the policy filters them itself.
        findings: &scanned,
        requested_model: model,
        provider,
        prompt_tokens,
        prompt_tokens_exact: false,
        task: Some(sluice::classify::Classifier::new().classify(prompt)),
        turns: context.turns,
        tool_steps: context.tool_steps,
        tools_present: context.tools,
        stream: context.stream,
        unparsed: false,
        estimated_cost_usd: config.estimated_cost_usd(model, prompt_tokens, None),
        local_queue_depth: 0,
        sticky_local: context.sticky,
    };
    let decision = policy.decide(&signals);
    let summary = sluice::pipeline::signal_summary(&signals, &decision);
    if json {
        let findings: Vec<_> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "category": f.category, "type": f.kind, "start": f.span.start, "end": f.span.end,
                    "confidence": f.confidence, "validator": f.validator,
                })
            })
            .collect();
        let out = serde_json::json!({
            "team": team, "decision": decision.action, "rule": decision.rule,
            "decided_by": &*decision.decided_by, "reason": decision.reason,
            "monitor": decision.monitor, "prompt_tokens": prompt_tokens, "findings": findings, "signals": summary,
        });
        println!("{out}");
    } else {
        println!("decision: {}", decision.action.as_str());
        println!("rule:     {}", decision.decided_by);
        println!("reason:   {}", decision.reason);
        for m in &decision.monitor {
            println!("monitor:  {} would have decided {} (mode: monitor, not applied)", m.rule, m.action.as_str());
        }
        println!("tokens:   {prompt_tokens} (estimated)");
        if let Some(task) = signals.task {
            println!("task:     {} ({:.2})", task.task.as_str(), task.confidence);
        }
        if let Some(cost) = signals.estimated_cost_usd {
            println!("cost:     ${cost:.6} (estimated, {model})");
        }
        if !decision.because.is_empty() {
            println!("because:  {}", decision.because.join("; "));
        }
        if findings.is_empty() {
            println!("findings: none");
        } else {
            println!("findings:");
            for f in &findings {
                println!(
                    "  {:<15} bytes {}..{}  confidence {:.2}  ({})",
                    f.kind, f.span.start, f.span.end, f.confidence, f.validator
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice budget status`: a running sluice answers on its admin
/// listener (its store may be locked, or shared in Redis); otherwise the
/// store is read here, with the policies from `policies_dir`.
fn budget_status(config: &Config, team: Option<&str>, json: bool) -> Result<ExitCode> {
    use sluice::limits::{Limiter, Report};
    if let Some(team) = team.filter(|t| !sluice::identity::is_team_name(t)) {
        bail!("`{team}` is not a team name");
    }
    let report: Report = match budget_from_admin(config, team)? {
        Some(report) => report,
        None => {
            let policies = Policies::load(&config.policies_dir, &config.shadow)
                .map_err(|e| anyhow::anyhow!("policies in {} are invalid:\n{e}", config.policies_dir.display()))?;
            let teams: Vec<_> = policies
                .set()
                .teams()
                .filter_map(|t| policies.team(t).map(|p| (t.to_string(), p.limits().clone())))
                .collect();
            let limiter = Limiter::open(&config.limits, false).with_context(|| {
                "sluice seems to be running (its store is locked) but its admin listener did not answer".to_string()
            })?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(limiter.report(&teams, team))?
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("store: {}", report.store);
    if report.rows.is_empty() {
        println!("no team has limits{}", team.map(|t| format!(" (team {t})")).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<20} {:<20} {:>14} {:>14} {:>5}  {:<21} on_limit",
        "team", "user", "budget", "used", "limit", "%", "resets (UTC)"
    );
    for r in &report.rows {
        let amount = |n: u64| if r.unit == "micro_usd" { format!("${:.2}", n as f64 / 1e6) } else { n.to_string() };
        let percent = if r.limit == 0 { 100.0 } else { r.used as f64 * 100.0 / r.limit as f64 };
        let resets = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(r.resets_unix));
        println!(
            "{:<16} {:<20} {:<20} {:>14} {:>14} {:>5.0}  {:<21} {}",
            r.team,
            r.user.as_deref().unwrap_or("(team)"),
            r.budget,
            amount(r.used),
            amount(r.limit),
            percent,
            resets.to_string(),
            r.on_limit
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The report from a running sluice's admin listener, with the admin
/// token it wrote into `audit.dir`; `None` when no sluice answers there.
fn budget_from_admin(config: &Config, team: Option<&str>) -> Result<Option<sluice::limits::Report>> {
    use sluice::audit::remote::{AdminClient, AdminToken, RemoteError};
    let Ok(token) = AdminToken::for_reader(&config.audit.dir) else {
        return Ok(None);
    };
    let client = AdminClient::new(config.admin.listen, token)?;
    let query = team.map(|t| format!("?team={t}")).unwrap_or_default();
    match client.get(&format!("/budget{query}")) {
        Ok(body) => Ok(Some(
            serde_json::from_slice(&body).with_context(|| format!("the budget report from {}", client.addr()))?,
        )),
        // A token left by a sluice that has stopped.
        Err(RemoteError::Connect { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("the admin listener at {}", client.addr())),
    }
}

/// The audit log in `dir` (default: `audit.dir`), or, while a running
/// `sluice serve` holds it, that server's log through its admin listener
/// (`admin.listen`): the answers are the same either way.
fn audit_open(dir: Option<&Path>, config: &Config) -> Result<AuditSource> {
    let dir = dir.unwrap_or(&config.audit.dir);
    if !dir.exists() {
        bail!("no audit log at {} (has sluice served any request there?)", dir.display());
    }
    let source = AuditSource::open(dir, config.admin.listen)?;
    if source.server().is_some() {
        tracing::debug!(source = %source.describe(), "reading the audit log through the running server");
    }
    Ok(source)
}

fn audit_query(source: &AuditSource, filter: &AuditFilter, json: bool) -> Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        source.records(filter, |r| {
            serde_json::to_writer(&mut out, &r)?;
            out.write_all(b"\n")?;
            Ok::<(), anyhow::Error>(())
        })?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:>6}  {:<24} {:<12} {:<12} {:<8} {:<20} {:>6} {:<22} {:>10}  findings",
        "seq", "time (UTC)", "team", "user", "decision", "rule", "status", "model", "total_ms"
    )?;
    let count = source.records(filter, |r| print_record(&mut out, &r))?;
    out.flush()?;
    eprintln!("{count} record(s)");
    Ok(ExitCode::SUCCESS)
}

fn print_record(out: &mut dyn std::io::Write, s: &StoredRecord) -> Result<()> {
    let r = &s.record;
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(r.time_unix_ms));
    let findings: Vec<String> = r.findings.iter().map(|(k, n)| format!("{k}={n}")).collect();
    writeln!(
        out,
        "{:>6}  {:<24} {:<12} {:<12} {:<8} {:<20} {:>6} {:<22} {:>10.3}  {}",
        s.seq,
        time.to_string(),
        r.team,
        r.user,
        r.decision,
        r.rule,
        r.status,
        r.model_requested,
        r.latency_us.total as f64 / 1000.0,
        findings.join(",")
    )?;
    Ok(())
}

/// The chain walk, then the signed checkpoints (stored ones, plus those in
/// `file`) against it; on the files, or through the running server.
fn audit_verify(source: &AuditSource, origin: &str, file: Option<&Path>, key: Option<&str>) -> Result<ExitCode> {
    use sluice::audit::{Front, Located};
    let dir = source.dir();
    let report = source.verify()?;
    let mut failed = false;
    match report.first_bad {
        None => println!("audit log OK: {} record(s), hash chain intact", report.checked),
        Some(bad) => {
            println!("audit log TAMPERED: record {}: {}", bad.seq, bad.reason);
            println!("({} record(s) before it verified)", report.checked);
            failed = true;
        }
    }

    let mut checkpoints: Vec<Located> = source
        .checkpoints()?
        .into_iter()
        .map(|c| Located { place: format!("stored checkpoint #{}", c.number), note: Ok(c.note) })
        .collect();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let notes = sluice::audit::note::split_notes(&text);
        if notes.is_empty() {
            bail!("{} holds no checkpoints", file.display());
        }
        checkpoints.extend(
            notes.into_iter().map(|n| Located { place: format!("{}:{}", file.display(), n.line), note: n.note }),
        );
    }
    let verifier = match key {
        Some(key) => Some(sluice::audit::note::Verifier::parse(key).context("--key")?),
        None => {
            let found = sluice::audit::keys::load_verifier(dir, origin)?;
            if found.is_some() && !checkpoints.is_empty() {
                eprintln!(
                    "warning: checking signatures with the key in {}; whoever can rewrite the log can replace it                      too. Pin the key: sluice audit verify --key '<sluice audit checkpoint --public-key, saved earlier>'",
                    dir.display()
                );
            }
            found
        }
    };
    let proof = source.check_checkpoints(verifier.as_ref(), &checkpoints)?;
    for warning in &proof.warnings {
        eprintln!("warning: {warning}");
    }
    // A rewrite early in a long log disagrees with every later checkpoint.
    const SHOWN: usize = 20;
    for problem in proof.problems.iter().take(SHOWN) {
        println!("audit log TAMPERED: {problem}");
    }
    if proof.problems.len() > SHOWN {
        println!("... and {} more", proof.problems.len() - SHOWN);
    }
    if let Some((from, to)) = proof.rewritten {
        println!("the rewrite lies in records {from}..={to} (checkpoints before {from} still match)");
    }
    if !proof.ok() {
        println!(
            "checkpoints FAILED: {} problem(s); {} signed checkpoint(s) matched the log",
            proof.problems.len(),
            proof.matched
        );
        return Ok(ExitCode::from(1));
    }
    if proof.matched > 0 {
        let (seq, time) = proof.latest.clone().unwrap_or_default();
        println!(
            "checkpoints OK: {} signed checkpoint(s) match the log (newest: record {seq}, signed {time})",
            proof.matched
        );
    }
    if let Front::Proven { through, time, place } = &proof.front {
        println!("records 1..{through} were removed by retention; {place} (signed {time}) proves the cut");
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The newest stored checkpoint, or the verifier key to pin.
fn audit_checkpoint(dir: Option<&Path>, config: &Config, public_key: bool) -> Result<ExitCode> {
    let origin = config.audit.origin();
    if public_key {
        let dir = dir.unwrap_or(&config.audit.dir);
        let verifier = sluice::audit::keys::load_verifier(dir, &origin)?
            .with_context(|| format!("no signing key in {} (sluice serve creates it on first start)", dir.display()))?;
        println!("{verifier}");
        return Ok(ExitCode::SUCCESS);
    }
    let source = audit_open(dir, config)?;
    let latest = source.latest_checkpoint()?.with_context(|| {
        format!("no checkpoint in {} yet (sluice serve signs one as records arrive)", source.describe())
    })?;
    print!("{}", latest.note);
    Ok(ExitCode::SUCCESS)
}

fn audit_export(
    source: &AuditSource,
    filter: &AuditFilter,
    format: ExportFormat,
    meta: &sluice::export::HecMeta,
    output: Option<&Path>,
) -> Result<ExitCode> {
    use sluice::export::Format;
    use std::io::{IsTerminal, Write};
    let format = match format {
        ExportFormat::Jsonl => Format::JsonLines,
        ExportFormat::Csv => Format::Csv,
        ExportFormat::Hec => Format::Hec,
    };
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(export_file(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let terminal = std::io::stderr().is_terminal();
    let context = || output.map(|p| format!("export to {}", p.display())).unwrap_or_else(|| "export".into());
    // Records stream from the log (or the running server) to the output;
    // none are held.
    let mut writer = sluice::export::Writer::start(format, meta, &mut out).with_context(context)?;
    source.records(filter, |stored| {
        writer.record(&stored).with_context(context)?;
        if terminal && writer.count().is_multiple_of(1000) {
            eprint!("\rexported {} records", writer.count());
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let written = writer.finish().with_context(context)?;
    if terminal {
        eprintln!("\rexported {written} records");
    }
    Ok(ExitCode::SUCCESS)
}

/// The export file, owner-only from the start: it holds who asked what of
/// which model, as the audit log does.
fn export_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("cannot create {}", path.display()))
}

/// This machine's name, for HEC's `host`; `sluice` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sluice".to_string())
}

fn shadow_report(
    source: &AuditSource,
    shadow: &sluice::config::ShadowConfig,
    filter: &AuditFilter,
    format: ReportFormat,
) -> Result<ExitCode> {
    use sluice::shadow::report;
    let mut records = Vec::new();
    source.records(filter, |r| {
        records.push(r);
        Ok::<(), anyhow::Error>(())
    })?;
    // The catalog `serve` attributes with, so the organisation's own apps
    // get their names; an app no longer in it still gets a row, by id.
    let catalog = sluice::shadow::monitor::load_catalog(shadow)?;
    let rows = report::aggregate(&records, &catalog, filter.team.as_deref());
    let format = match format {
        ReportFormat::Table => report::Format::Table,
        ReportFormat::Json => report::Format::Json,
        ReportFormat::Csv => report::Format::Csv,
    };
    if format == report::Format::Table {
        let since = filter.since_ms.map(report::iso_time).unwrap_or_default();
        let until = filter.until_ms.map(report::iso_time).unwrap_or_else(|| "now".to_string());
        let team = filter.team.as_deref().map(|t| format!(", team {t}")).unwrap_or_default();
        println!("AI apps seen {since} .. {until}{team}\n");
    }
    if format == report::Format::Table && rows.is_empty() {
        println!("no AI usage in the audit log for this period");
    } else {
        print!("{}", report::render(&rows, format)?);
    }
    let events: u64 = rows.iter().map(|r| r.requests).sum();
    eprintln!("{} app(s), {events} event(s)", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// Decide the period's recorded requests again under the policies in
/// `dir`, loaded and checked exactly as `policy check` does.
fn policy_replay(
    config: &Config,
    dir: &Path,
    audit_dir: Option<&Path>,
    filter: &AuditFilter,
    show: usize,
    json: bool,
) -> Result<ExitCode> {
    use sluice::policy::replay;
    let candidate = match Policies::load(dir, &config.shadow) {
        Ok(policies) => policies,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s) in {}; nothing replayed", errors.0.len(), dir.display());
            return Ok(ExitCode::from(1));
        }
    };
    let mut replayer = replay::Replayer::new(candidate.set(), config, show);
    // The policies in force, for what a replay cannot see (dictionaries).
    match Policies::load(&config.policies_dir, &config.shadow) {
        Ok(current) => {
            replay::dictionary_notes(current.set(), candidate.set()).into_iter().for_each(|n| replayer.note(n))
        }
        Err(_) => replayer.note(format!(
            "the policies in force ({}) do not load, so changed dictionaries are not noted",
            config.policies_dir.display()
        )),
    }
    let source = audit_open(audit_dir, config)?;
    source.records(filter, |stored| {
        replayer.add(&stored);
        Ok::<(), anyhow::Error>(())
    })?;
    let report = replayer.finish();
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", replay::render(&report, &dir.display().to_string()));
    }
    Ok(ExitCode::SUCCESS)
}

fn token_new(team: &str, user: &str) -> Result<ExitCode> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    let token = format!("slk-{}", hex::encode(bytes));
    println!("token (give it to {user}; it is not stored anywhere): {token}");
    println!("config entry for identity.tokens:");
    println!("  - {{ sha256: \"{}\", team: \"{team}\", user: \"{user}\" }}", sluice::identity::hash_token(&token));
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339, or a duration meaning that long before now.
fn parse_time(s: &str) -> Result<u64> {
    let t = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let back = humantime::parse_duration(s)
                .with_context(|| format!("`{s}` is neither an RFC 3339 time nor a duration like 15m"))?;
            SystemTime::now() - back
        }
    };
    Ok(t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    #[test]
    fn parse_time_takes_durations_back_from_now() {
        for (text, back_ms) in [("30m", 30 * 60_000), ("24h", 24 * 3_600_000), ("7d", 7 * 86_400_000u64)] {
            let before = now_ms();
            let t = parse_time(text).unwrap();
            let after = now_ms();
            assert!(t + back_ms >= before && t + back_ms <= after, "{text}: {t}");
        }
    }

    #[test]
    fn parse_time_takes_rfc3339() {
        assert_eq!(parse_time("2024-05-01T12:00:00Z").unwrap(), 1_714_564_800_000);
        assert_eq!(parse_time("2024-05-01 12:00:00").unwrap(), 1_714_564_800_000);
        assert!(parse_time("last tuesday").is_err());
    }
}

//! Local-engine benchmark: time to first token and tokens/s for SmolLM2,
//! straight from mistral.rs in-process and through a running sluice gateway,
//! at a given concurrency. The same prompt, settings and greedy sampling are
//! used on both paths, so the difference is what sluice adds.
//!
//!   cargo run --release --example bench_local -- direct  --concurrency 1 --rounds 5
//!   cargo run --release --example bench_local -- gateway --url http://127.0.0.1:8080 --concurrency 8
//!
//! Prints one JSON line per run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use mistralrs::{GgufModelBuilder, RequestBuilder, Response, TextMessageRole, TokenSource};
use serde_json::{json, Value};

/// The prompt carries a card number so sluice's default policy keeps it local.
const PROMPT: &str = "Card 4111 1111 1111 1111 was charged twice. Write three sentences about rivers.";
const SYSTEM: &str = "You are a concise assistant.";

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Direct,
    Gateway,
}

#[derive(Parser)]
struct Args {
    mode: Mode,
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: String,
    /// Gateway base URL (gateway mode).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
}

/// One generation as a client saw it.
struct Sample {
    ttft: Duration,
    total: Duration,
    tokens: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (samples, wall) = match args.mode {
        Mode::Direct => direct(&args).await?,
        Mode::Gateway => gateway(&args).await?,
    };
    report(&args, &samples, wall);
    Ok(())
}

async fn direct(args: &Args) -> Result<(Vec<Sample>, Duration)> {
    let path = std::path::Path::new(&args.model);
    let dir = path.parent().context("model path has no directory")?.to_string_lossy().into_owned();
    let file = path.file_name().context("model path has no file name")?.to_string_lossy().into_owned();
    // The settings sluice's embedded engine uses.
    let model = Arc::new(
        GgufModelBuilder::new(dir, vec![file])
            .with_token_source(TokenSource::None)
            .with_force_cpu()
            .with_max_num_seqs(args.concurrency.max(4))
            .build()
            .await?,
    );
    // Warm-up: the first generation pays one-off allocation costs.
    one_direct(&model, 8).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let model = model.clone();
        let (rounds, max_tokens) = (args.rounds, args.max_tokens);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..rounds {
                out.push(one_direct(&model, max_tokens).await?);
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    Ok((samples, started.elapsed()))
}

async fn one_direct(model: &mistralrs::Model, max_tokens: usize) -> Result<Sample> {
    let request = RequestBuilder::new()
        .add_message(TextMessageRole::System, SYSTEM)
        .add_message(TextMessageRole::User, PROMPT)
        .set_sampler_max_len(max_tokens);
    let started = Instant::now();
    let mut stream = model.stream_chat_request(request).await?;
    let mut ttft = None;
    let mut tokens = 0;
    while let Some(response) = stream.next().await {
        match response {
            Response::Chunk(chunk) => {
                if chunk.choices.iter().any(|c| c.delta.content.as_ref().is_some_and(|t| !t.is_empty())) {
                    ttft.get_or_insert_with(|| started.elapsed());
                }
                if let Some(u) = chunk.usage {
                    tokens = u.completion_tokens;
                    break;
                }
            }
            Response::ModelError(e, _) => bail!("model error: {e}"),
            Response::InternalError(e) | Response::ValidationError(e) => bail!("engine error: {e}"),
            _ => {}
        }
    }
    Ok(Sample { ttft: ttft.context("no token")?, total: started.elapsed(), tokens })
}

async fn gateway(args: &Args) -> Result<(Vec<Sample>, Duration)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let url = format!("{}/v1/chat/completions", args.url.trim_end_matches('/'));
    one_gateway(&client, &url, 8).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url) = (client.clone(), url.clone());
        let (rounds, max_tokens) = (args.rounds, args.max_tokens);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..rounds {
                out.push(one_gateway(&client, &url, max_tokens).await?);
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    Ok((samples, started.elapsed()))
}

async fn one_gateway(client: &reqwest::Client, url: &str, max_tokens: usize) -> Result<Sample> {
    let body = json!({
        "model": "gpt-4o-mini", "stream": true, "max_tokens": max_tokens,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
    });
    let started = Instant::now();
    let resp = client.post(url).json(&body).send().await?;
    if resp.headers().get("x-sluice-route").and_then(|v| v.to_str().ok()) != Some("local") {
        bail!("the prompt was not routed local (status {})", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut ttft = None;
    let mut tokens = 0;
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data)?;
            if v["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()) {
                ttft.get_or_insert_with(|| started.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n as usize;
            }
        }
    }
    Ok(Sample { ttft: ttft.context("no token")?, total: started.elapsed(), tokens })
}

fn report(args: &Args, samples: &[Sample], wall: Duration) {
    let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64() * 1000.0).collect();
    ttft.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    // Decode speed of each stream: tokens after the first over the time after it.
    let mut decode: Vec<f64> = samples
        .iter()
        .filter(|s| s.tokens > 1)
        .map(|s| (s.tokens - 1) as f64 / (s.total - s.ttft).as_secs_f64())
        .collect();
    decode.sort_by(f64::total_cmp);
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let out = json!({
        "mode": match args.mode { Mode::Direct => "direct", Mode::Gateway => "gateway" },
        "concurrency": args.concurrency,
        "requests": samples.len(),
        "max_tokens": args.max_tokens,
        "ttft_ms_p50": pct(&ttft, 0.5),
        "ttft_ms_p90": pct(&ttft, 0.9),
        "ttft_ms_mean": ttft.iter().sum::<f64>() / ttft.len() as f64,
        "decode_tok_s_per_stream_p50": if decode.is_empty() { 0.0 } else { pct(&decode, 0.5) },
        "aggregate_tok_s": tokens as f64 / wall.as_secs_f64(),
        "completion_tokens": tokens,
    });
    println!("{out}");
}

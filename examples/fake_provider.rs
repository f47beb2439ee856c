//! Runs the test suite's fake cloud provider (OpenAI + Anthropic over HTTPS
//! with its own CA) as a standalone process, for benchmarks and manual runs.
//!
//! ```text
//! cargo run --release --example fake_provider -- --listen 127.0.0.1:9443 --ca-out /tmp/fake-ca.pem
//! ```
//!
//! Point sluice at it with `upstream.extra_ca_file: /tmp/fake-ca.pem` and a
//! `upstream.resolve` entry mapping `api.openai.com:443` to the listen address.

#[path = "../tests/support/fake_provider.rs"]
mod fake_provider;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Fake OpenAI/Anthropic HTTPS provider with its own CA")]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on start).
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// Where to write the CA certificate (PEM) that clients must trust.
    #[arg(long)]
    ca_out: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = fake_provider::FakeProvider::start_on(args.listen).await;
    // Nobody reads the record in this process, and a long benchmark would
    // grow it without bound.
    fake.record_requests(false);
    if let Some(path) = &args.ca_out {
        fake.write_ca(path).with_context(|| format!("writing CA to {}", path.display()))?;
    }
    println!("listening on {}", fake.addr());
    tokio::signal::ctrl_c().await.context("waiting for ctrl-c")?;
    Ok(())
}

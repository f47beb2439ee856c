//! The gateway listener: apps point their OpenAI/Anthropic `base_url` here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::{Ingress, Sluice};

pub async fn run(sluice: Arc<Sluice>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let grace = Duration::from_millis(sluice.config().gateway.shutdown_grace_ms);
    let limits = super::ConnLimits::gateway(&sluice.config().gateway);
    let handler = move |req, peer: SocketAddr| sluice.clone().handle(req, peer, Ingress::Gateway);
    super::serve(listener, handler, limits, shutdown, grace).await;
}

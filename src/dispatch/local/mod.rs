//! The local tier: where `local` decisions are answered. Either the embedded
//! mistral.rs engine or an external OpenAI-compatible server (vLLM, Ollama,
//! llama.cpp, ...), behind one bounded admission queue.
//!
//! A backend turns a canonical request into a [`Generation`]: the prompt's
//! token count and a channel of [`GenEvent`]s. Dropping the generation
//! cancels it (the engine stops generating for a client that went away).

pub mod device;
pub mod embedded;
pub mod external;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::config::{LocalBackendKind, LocalConfig, UpstreamConfig};
use crate::telemetry;
use crate::wire::answer::{Delta, Finish};
use crate::wire::CanonicalRequest;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LocalError {
    #[error("no local model is configured (local.backend: none)")]
    Disabled,
    #[error("the local model is still loading")]
    Loading,
    #[error("the local model is unavailable: {0}")]
    Failed(String),
    #[error("local generation failed: {0}")]
    Backend(String),
    /// `local.device` cannot be honoured; sluice does not start.
    #[error(transparent)]
    Device(#[from] device::DeviceError),
}

/// One event of a running generation.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Delta(Delta),
    Finish(Finish),
}

pub struct Generation {
    pub prompt_tokens: u64,
    pub events: mpsc::Receiver<Result<GenEvent, LocalError>>,
    /// Held until the generation is dropped: its place in the queue and
    /// its engine slot.
    _admission: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
    _inflight: InflightGuard,
}

/// Why a request could not get a place in the local queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflowed {
    /// The queue is full (overflow `reject` or `cloud`).
    Full,
    /// Waited as long as the policy allows (overflow `wait`).
    TimedOut,
}

/// The loaded backend.
pub enum Backend {
    Embedded(embedded::Engine),
    // Boxed: the HTTP client is several times the size of the engine handle.
    External(Box<external::Server>),
}

enum State {
    Disabled,
    Loading,
    Ready(Arc<Backend>),
    Failed(String),
}

pub struct LocalTier {
    state: RwLock<State>,
    model_name: String,
    /// Places for requests: running plus queued.
    admission: Arc<Semaphore>,
    /// Engine slots: requests generating at once.
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    inflight: Arc<AtomicUsize>,
    max_tokens_cap: u64,
    context_length: Option<u64>,
    max_prompt_tokens: Option<u64>,
}

/// A place in the queue, held until generation starts.
pub struct Admitted {
    permit: OwnedSemaphorePermit,
    inflight: InflightGuard,
}

struct InflightGuard {
    inflight: Arc<AtomicUsize>,
    max_concurrent: usize,
}

impl InflightGuard {
    fn new(inflight: Arc<AtomicUsize>, max_concurrent: usize) -> InflightGuard {
        let n = inflight.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(telemetry::LOCAL_QUEUE_DEPTH).set(n.saturating_sub(max_concurrent) as f64);
        InflightGuard { inflight, max_concurrent }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let n = self.inflight.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        metrics::gauge!(telemetry::LOCAL_QUEUE_DEPTH).set(n.saturating_sub(self.max_concurrent) as f64);
    }
}

impl LocalTier {
    /// Build the tier; the embedded model loads in the background and the
    /// tier reports [`LocalTier::is_ready`] once it has.
    pub fn start(cfg: &LocalConfig, upstream: &UpstreamConfig) -> Result<Arc<LocalTier>, LocalError> {
        let max_concurrent = cfg.max_concurrent.max(1);
        let model_name = match cfg.backend {
            LocalBackendKind::None => "none".to_string(),
            LocalBackendKind::Embedded => embedded::model_name(&cfg.model),
            LocalBackendKind::External => cfg.external.model.clone(),
        };
        let tier = Arc::new(LocalTier {
            state: RwLock::new(State::Loading),
            model_name,
            admission: Arc::new(Semaphore::new(max_concurrent + cfg.queue)),
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            inflight: Arc::new(AtomicUsize::new(0)),
            max_tokens_cap: cfg.max_tokens_cap,
            context_length: cfg.context_length,
            max_prompt_tokens: cfg.max_prompt_tokens,
        });
        match cfg.backend {
            LocalBackendKind::None => tier.set(State::Disabled),
            LocalBackendKind::External => {
                let server =
                    external::Server::new(&cfg.external, upstream).map_err(|e| LocalError::Failed(e.to_string()))?;
                tier.set(State::Ready(Arc::new(Backend::External(Box::new(server)))));
            }
            LocalBackendKind::Embedded => {
                // The device first: a build or a machine that cannot honour
                // it is a reason to stop whatever the model.
                let device = device::resolve(cfg.device)?;
                embedded::check_model_file(&cfg.model).map_err(LocalError::Failed)?;
                let loading = tier.clone();
                let cfg = cfg.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    match embedded::Engine::load(&cfg, device).await {
                        Ok(engine) => {
                            tracing::info!(model = %loading.model_name, secs = started.elapsed().as_secs_f64(), "local model loaded");
                            loading.set(State::Ready(Arc::new(Backend::Embedded(engine))));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "local model failed to load; local decisions get 503");
                            loading.set(State::Failed(e));
                        }
                    }
                });
            }
        }
        Ok(tier)
    }

    fn set(&self, state: State) {
        if let Ok(mut s) = self.state.write() {
            *s = state;
        }
    }

    /// Ready to generate, or disabled by config (nothing to wait for).
    pub fn is_ready(&self) -> bool {
        matches!(self.state.read().as_deref(), Ok(State::Ready(_)) | Ok(State::Disabled))
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    pub fn backend(&self) -> Result<Arc<Backend>, LocalError> {
        match self.state.read().as_deref() {
            Ok(State::Ready(b)) => Ok(b.clone()),
            Ok(State::Disabled) => Err(LocalError::Disabled),
            Ok(State::Loading) => Err(LocalError::Loading),
            Ok(State::Failed(e)) => Err(LocalError::Failed(e.clone())),
            Err(_) => Err(LocalError::Failed("state lock poisoned".into())),
        }
    }

    /// The model's context window in tokens, where known.
    pub fn context_length(&self) -> Option<u64> {
        if self.context_length.is_some() {
            return self.context_length;
        }
        match self.backend().ok().as_deref() {
            Some(Backend::Embedded(e)) => e.context_length(),
            _ => None,
        }
    }

    /// Prompt tokens as the local model counts them; estimated where the
    /// backend has no tokenizer here.
    pub fn count_tokens(&self, req: &CanonicalRequest, estimate: u64) -> u64 {
        match self.backend().ok().as_deref() {
            Some(Backend::Embedded(e)) => e.count_tokens(req).unwrap_or(estimate),
            _ => estimate,
        }
    }

    /// The most prompt tokens the local tier takes: the model's context, or
    /// the configured `max_prompt_tokens` if lower.
    pub fn prompt_limit(&self) -> Option<u64> {
        match (self.context_length(), self.max_prompt_tokens) {
            (Some(c), Some(m)) => Some(c.min(m)),
            (c, m) => c.or(m),
        }
    }

    /// Requests waiting for an engine slot right now.
    pub fn queue_depth(&self) -> u64 {
        self.inflight.load(Ordering::SeqCst).saturating_sub(self.max_concurrent) as u64
    }

    /// An upper bound on what `count_tokens` returns with a real
    /// tokenizer, computed without one.
    pub fn max_token_count(&self, req: &CanonicalRequest) -> u64 {
        embedded::Engine::max_token_count(req)
    }

    /// Whether `count_tokens` uses a real tokenizer.
    pub fn has_tokenizer(&self) -> bool {
        matches!(self.backend().ok().as_deref(), Some(Backend::Embedded(_)))
    }

    /// `max_tokens` as the local tier will apply it.
    pub fn capped_max_tokens(&self, requested: Option<u64>) -> u64 {
        requested.unwrap_or(self.max_tokens_cap).min(self.max_tokens_cap)
    }

    /// Take a place in the queue. `wait` is `None` for "don't wait".
    pub async fn admit(&self, wait: Option<Duration>) -> Result<Admitted, Overflowed> {
        let permit = match self.admission.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match wait {
                None => return Err(Overflowed::Full),
                Some(wait) => match tokio::time::timeout(wait, self.admission.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(Overflowed::TimedOut),
                },
            },
        };
        Ok(Admitted { permit, inflight: InflightGuard::new(self.inflight.clone(), self.max_concurrent) })
    }

    /// Start generating. The returned generation holds the queue place.
    pub async fn generate(
        &self,
        req: &CanonicalRequest,
        admitted: Admitted,
        prompt_tokens: u64,
    ) -> Result<Generation, LocalError> {
        let backend = self.backend()?;
        // Waiting here is waiting in the queue; the queue is bounded by admission.
        let slot =
            self.slots.clone().acquire_owned().await.map_err(|_| LocalError::Failed("local tier shut down".into()))?;
        // Never ask for more than the context has room for.
        let room = self.context_length().map(|c| c.saturating_sub(prompt_tokens).max(1));
        let max_tokens = self.capped_max_tokens(req.max_tokens).min(room.unwrap_or(u64::MAX));
        let started = match backend.as_ref() {
            Backend::Embedded(e) => e.generate(req, max_tokens).await,
            Backend::External(s) => s.generate(req, max_tokens).await,
        };
        let events = match started {
            Ok(started) => started,
            Err(e) => {
                if let (Backend::Embedded(_), LocalError::Failed(msg)) = (backend.as_ref(), &e) {
                    // The engine itself is gone: stop sending work to it.
                    self.set(State::Failed(msg.clone()));
                }
                return Err(e);
            }
        };
        Ok(Generation { prompt_tokens, events, _admission: admitted.permit, _slot: slot, _inflight: admitted.inflight })
    }
}

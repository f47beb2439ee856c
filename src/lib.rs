//! sluice: a policy-driven egress gate for LLM traffic.
//!
//! The request path lives in [`pipeline`]; each step is its own module with
//! plain data in and out: [`identity`] → [`wire`] → [`inspect`] → [`policy`]
//! → [`dispatch`] → [`audit`] / [`telemetry`].
//!
//! # Layout
//!
//! - [`ingress`]: the listeners (gateway, admin, forward proxy), their one
//!   accept loop and HTTP server builder, limits and shutdown; the proxy's
//!   tunnels, interception and passthrough relaying (`proxy::passthrough`).
//! - [`relay`]: byte relays below ingress and pipeline: CONNECT tunnels and
//!   WebSockets whose client messages are inspected.
//! - [`pipeline`]: the request path, one file per phase:
//!   - `extract`: headers and the bounded body, read into a canonical request.
//!   - `inspect`: the body scanned into findings and the policy's signals.
//!   - `refusal`: every way a request is turned away, rendered for the client.
//!   - `respond`: local and relayed answers, streamed, redactions restored.
//!   - `trail`: the request's audit record, and the one place it is written.
//!   - `proxied`: records of what the proxy relays besides LLM requests
//!     (and of tunnels and door refusals), and the WebSocket message verdict.
//! - [`identity`]: who is asking: sluice tokens, a trusted proxy's user
//!   header, source networks, the anonymous team, in that order.
//! - [`limits`]: budgets and rate limits per team and user: calendar-window
//!   counters in sled or Redis, checked before dispatch.
//! - [`wire`]: provider wire formats, parsed into one canonical request:
//!   - `openai`, `anthropic`, `responses`, `gemini`: one file per dialect:
//!     parsing, whole and streamed answers, error and model-list bodies, and
//!     where the text sits in its streamed answers.
//!   - `dialect`: `Dialect`'s methods and the stream encoder, which only
//!     pick the dialect's module.
//!   - `shapes`: which request shape a method and path name.
//!   - `document`: everything a body carries (strings, keys, attachments).
//!   - `error`: why a body could not be read, for the client and the record.
//!   - `pdf`: text extracted from PDF attachments, for scanning.
//!   - `answer`: what a generation backend produces, in any dialect.
//!   - `sse`: the one server-sent-events framer (event ends, `data`), and
//!     the vocabulary a dialect uses to say where its streamed text sits.
//!   - `providers`: the provider catalog: hosts, API families, policy names.
//! - [`inspect`]: detectors for PII, secrets and team terms, giving findings.
//! - [`shadow`]: the shadow-AI monitor: the shipped catalog of AI services.
//! - [`classify`]: the task classifier (code, summarization, math, ...).
//! - [`sticky`]: sticky conversations: once kept local, later turns stay local.
//! - [`policy`]: per-team policy files, and the decision for each request:
//!   - `org`: org.yaml's rules first, profiles (`extends:`), precedence.
//!   - `reload`: the live set, swapped whole on SIGHUP and file changes.
//! - [`redact`]: placeholders in for the cloud, values back in the answer.
//! - [`dispatch`]: where a decided request goes: the upstream client, an
//!   intercepted connection's origin, or the local tier.
//! - [`audit`]: the tamper-evident, hash-chained audit log and its writer;
//!   signed checkpoints of its head, retention behind a signed cut, and the
//!   keys for both and for the prompt digest.
//! - [`export`]: audit records as Splunk HEC events with CIM Web fields,
//!   JSON lines or CSV (`sluice audit export`).
//! - [`telemetry`]: metric names, units and the Prometheus recorder.
//! - [`config`]: `sluice.yaml`, with a default for every field.
//! - [`ca`]: the name-constrained CA and per-host leaf certificates.
//! - [`blocking`]: a bounded pool that inspects large bodies off the async workers.
//! - [`private_dir`]: owner-only directories for the audit store and the CA.
//! - [`body`]: body and error types shared by every layer (a leaf).
//! - [`headers`]: the one list of hop-by-hop and credential headers (a leaf).
//! - [`net`]: CIDR blocks and resolve pins, shared by config, upstream and proxy (a leaf).

pub mod audit;
pub mod blocking;
pub mod body;
pub mod ca;
pub mod classify;
pub mod config;
pub mod dispatch;
pub mod export;
pub mod headers;
pub mod identity;
pub mod ingress;
pub mod inspect;
pub mod limits;
pub mod net;
pub mod pipeline;
pub mod policy;
pub mod private_dir;
pub mod redact;
pub mod relay;
pub mod shadow;
pub mod sticky;
pub mod telemetry;
pub mod wire;

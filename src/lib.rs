//! sluice: a policy-driven egress gate for LLM traffic.
//!
//! The request path lives in [`pipeline`]; each step is its own module with
//! plain data in and out: [`identity`] → [`wire`] → [`inspect`] → [`policy`]
//! → [`dispatch`] → [`audit`] / [`telemetry`].

pub mod audit;
pub mod blocking;
pub mod ca;
pub mod classify;
pub mod config;
pub mod dispatch;
pub mod identity;
pub mod ingress;
pub mod inspect;
pub mod pipeline;
pub mod policy;
pub mod private_dir;
pub mod redact;
pub mod session;
pub mod telemetry;
pub mod wire;

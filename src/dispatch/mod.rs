//! Dispatch: where a decided request goes. `upstream` is the verified HTTPS
//! client (cloud providers at the gateway, the external local backend);
//! `origin` is an intercepted connection's own origin; `local` is the local
//! tier (embedded mistral.rs or an external OpenAI-compatible server).

pub mod local;
pub mod origin;
pub mod upstream;

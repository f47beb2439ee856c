//! Dispatch: where a decided request goes. `cloud` is the verified upstream
//! client; `local` is the local tier (embedded mistral.rs or an external
//! OpenAI-compatible server).

pub mod cloud;
pub mod origin;
pub mod local;

//! Dispatch: where a decided request goes. `cloud` is the verified upstream
//! client; the embedded local engine arrives with its own issue.

pub mod cloud;

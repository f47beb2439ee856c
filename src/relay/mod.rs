//! Byte relays between a client and an origin, below both the ingress and
//! the pipeline: CONNECT tunnels (with idle timeouts, byte counts and the
//! record of what happened) and WebSockets whose client messages are
//! inspected before they are forwarded.

pub mod tunnel;
pub mod websocket;

//! The sluice modules under fuzzing, compiled standalone: including them by
//! path keeps the fuzz build free of the main crate's heavy dependencies.

#[path = "../../src/inspect/mod.rs"]
pub mod inspect;

#[path = "../../src/redact/mod.rs"]
pub mod redact;

/// The wire formats: the body inventory (duplicate keys, strings,
/// attachments), and the dialects the redaction restorer reads streams of.
#[path = "../../src/wire/mod.rs"]
pub mod wire;

/// The proxy's ClientHello reader (SNI), which sees every CONNECT's first bytes.
#[path = "../../src/ingress/proxy/sni.rs"]
pub mod sni;

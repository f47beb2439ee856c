//! The sluice modules under fuzzing, compiled standalone: including them by
//! path keeps the fuzz build free of the main crate's heavy dependencies.

#[path = "../../src/inspect/mod.rs"]
pub mod inspect;

#[path = "../../src/redact/mod.rs"]
pub mod redact;

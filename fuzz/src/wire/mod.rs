//! The wire modules under fuzzing, by path (see ../lib.rs).

#[path = "../../../src/wire/error.rs"]
mod error;
pub use error::ParseError;

#[path = "../../../src/wire/document.rs"]
pub mod document;

#[path = "../../../src/wire/pdf.rs"]
pub mod pdf;

#[path = "../../../src/wire/sse.rs"]
pub mod sse;

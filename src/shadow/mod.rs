//! Shadow-AI monitoring: knowing which AI services the organisation's
//! traffic reaches, whether sluice inspects that traffic or only tunnels it.
//!
//! - `catalog`: the shipped, versioned catalog of AI services (domains, API
//!   hosts, data-handling facts) with the organisation's own additions, and
//!   the host lookup that runs on every proxied connection.
//! - `monitor`: what proxied traffic says about AI use: the app, an LLM
//!   API's shape on an unlisted host, the account, model downloads.

pub mod catalog;
pub mod monitor;
pub mod report;

pub use catalog::{
    ApiHost, ApiHostSpec, ApiShape, Catalog, CatalogError, Category, Entry, EntrySpec, FactFields, FactSpec, Retention,
    Training, Trains,
};

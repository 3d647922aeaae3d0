//! mecfed's wire types and typed clients for the protocols between processes: the site
//! protocol an edge agent speaks with the platform ([`site`], [`client`]).
//!
//! Architecture Invariant: this crate knows nothing of the store, axum, token signing or the
//! scheduler, so an edge agent built on it carries none of them; its types are the JSON
//! bodies the platform's REST handlers take and answer.

pub mod client;
pub mod site;

//! `htnn serve`: an MCP-over-xDS server that an unmodified istiod reads through
//! `meshConfig.configSources`. It serves the user's istio objects with full fidelity plus the
//! config generated from HTNN resources (see ARCHITECTURE.md).
//!
//! Layers: `source` (files → objects) → `publish` (objects → [`snapshot::Snapshot`]) →
//! `xds` (snapshot → istiod over MCP). `admin` exposes health, metrics and debug views.

pub use htnn_translators::{kinds, model, time};

pub mod admin;
pub mod cli;
pub mod k8s;
pub mod metrics;
pub mod publish;
pub mod serve;
pub mod snapshot;
pub mod source;
pub mod validate;
pub mod xds;

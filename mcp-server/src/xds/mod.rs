//! MCP over ADS: the per-stream protocol state machine ([`connection`]) and the tonic server
//! around it ([`server`]).

pub mod connection;
pub mod server;

pub use connection::{Connection, ConnectionStatus, PushTiming, TypeStatus};
pub use server::{AdsService, Connections, serve, serve_with_shutdown};

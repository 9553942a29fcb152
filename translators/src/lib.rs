//! Pure translation from the current objects to what istiod is served.
//!
//! [`translate`] is a deterministic function of its input (sorted maps, no clock, no I/O):
//! proxied istio objects pass through (unnamed routes of targeted VirtualServices get
//! deterministic names), HTNN objects become EnvoyFilters, and every HTNN object gets a
//! status.

pub mod kinds;
pub mod model;

//! Kubernetes mode: watches of the HTNN and istio kinds, status written back by the lease
//! holder, the validating admission webhook, and the CRDs of our kinds.

pub mod crds;
pub mod lease;
mod status;
mod store;
pub mod watch;
pub mod webhook;

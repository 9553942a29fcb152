//! The validating admission webhook.

//! Envoy dynamic module hosting htnn plugins.

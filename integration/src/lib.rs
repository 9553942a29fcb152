//! End-to-end tests against real istiod and Envoy.

//! Host-agnostic plugin API, filter manager and plugins.

//! Pure translation from an index snapshot to istio objects (see ARCHITECTURE.md).

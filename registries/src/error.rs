use std::fmt;

/// A config that cannot be accepted, naming the offending field the way the user wrote it
/// (`config.serviceRefreshInterval`, `config.groups[1]`, `type`), so the ServiceRegistry's
/// `Invalid` status points at the line to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// A registry that failed to start or reload. Transient failures after a start are the
/// registry's own business (it retries and reports itself degraded); this error means the
/// ServiceRegistry is `Invalid` and is not retried, as in HTNN.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegistryError(pub String);

impl RegistryError {
    pub fn new(reason: impl fmt::Display) -> Self {
        Self(reason.to_string())
    }
}

//! Status of HTNN objects: one `Accepted` condition, as HTNN reports it.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    Accepted,
    Invalid,
    TargetNotFound,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub reason: Reason,
    pub message: String,
    pub observed_generation: i64,
}

impl Status {
    pub fn accepted(generation: i64) -> Self {
        Self {
            reason: Reason::Accepted,
            message: "The resource has been accepted".into(),
            observed_generation: generation,
        }
    }

    pub fn invalid(generation: i64, message: impl Into<String>) -> Self {
        Self {
            reason: Reason::Invalid,
            message: message.into(),
            observed_generation: generation,
        }
    }

    pub fn target_not_found(generation: i64, message: impl Into<String>) -> Self {
        Self {
            reason: Reason::TargetNotFound,
            message: message.into(),
            observed_generation: generation,
        }
    }

    pub fn is_accepted(&self) -> bool {
        self.reason == Reason::Accepted
    }
}

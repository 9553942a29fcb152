//! Sources of objects: a directory of YAML/JSON files (the embedded default) and a
//! Kubernetes cluster ([`crate::k8s`]). Both deliver changes of single objects to a [`Sink`].

pub mod dir;

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::model::ObjectRef;
use htnn_translators::{Change, Status};

/// An object or file that could not be loaded, as shown in logs, metrics and `/debug/snapshot`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LoadError {
    pub file: String,
    /// Index of the YAML document in the file (0-based, counting `---` separators).
    pub document: Option<usize>,
    /// `Kind namespace/name` when the document got far enough to name its object.
    pub object: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(d) = self.document {
            write!(f, " document {d}")?;
        }
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Which source an object came from. When both define an object, Kubernetes wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    Dir,
    Kubernetes,
}

impl SourceId {
    pub fn label(self) -> &'static str {
        match self {
            SourceId::Dir => "dir",
            SourceId::Kubernetes => "kubernetes",
        }
    }
}

/// Status changes after a publication: `None` when the object has no status any more.
pub type StatusChanges = Vec<(ObjectRef, Option<Status>)>;

/// Where sources deliver their objects.
pub trait Sink: Send + Sync {
    /// Applies one source's changes. `errors` is the source's complete list of current load
    /// errors; `synced` says it finished its initial load (nothing is served to istiod
    /// before every source did).
    fn publish(&self, source: SourceId, changes: Vec<Change>, errors: Vec<LoadError>, synced: bool);

    /// The current status of every HTNN object.
    fn statuses(&self) -> BTreeMap<ObjectRef, Status>;

    /// Every later change of statuses, whichever source caused it.
    fn subscribe_statuses(&self) -> mpsc::UnboundedReceiver<StatusChanges>;
}

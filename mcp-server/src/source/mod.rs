//! Sources of objects. Today: a directory of YAML/JSON files (the embedded default).

pub mod dir;

use serde::Serialize;

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

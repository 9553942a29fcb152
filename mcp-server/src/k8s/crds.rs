//! The htnn.mosn.io/v1 CustomResourceDefinitions, generated from Rust types.

use std::process::ExitCode;

/// `htnn crds`: prints every CRD as one multi-document YAML stream.
pub fn print() -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

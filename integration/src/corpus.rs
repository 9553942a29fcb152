//! Reading Kubernetes-style objects from YAML/JSON files (the corpus and test fixtures).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The identity of an istio object as istiod's `/debug/configz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Kubernetes-style object (`kind`, `metadata.namespace`, `metadata.name`).
    /// A missing namespace is `default`, as with `kubectl apply`.
    pub fn of(object: &Value) -> Option<Self> {
        let kind = object.get("kind")?.as_str()?;
        let meta = object.get("metadata")?;
        let name = meta.get("name")?.as_str()?;
        let namespace = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        Some(Self::new(kind, namespace, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One object of the corpus, with where it came from.
#[derive(Debug, Clone)]
pub struct CorpusObject {
    pub key: ObjectKey,
    pub api_version: String,
    pub file: PathBuf,
    /// 1-based document number inside the file.
    pub document: usize,
    pub object: Value,
}

impl CorpusObject {
    pub fn spec(&self) -> &Value {
        self.object.get("spec").unwrap_or(&Value::Null)
    }

    pub fn labels(&self) -> &Value {
        self.object
            .pointer("/metadata/labels")
            .unwrap_or(&Value::Null)
    }

    pub fn annotations(&self) -> &Value {
        self.object
            .pointer("/metadata/annotations")
            .unwrap_or(&Value::Null)
    }

    /// `file.yaml#3`, for messages.
    pub fn origin(&self) -> String {
        let file = self
            .file
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        format!("{file}#{}", self.document)
    }
}

/// Whether `path` is a file `htnn serve` reads (`*.yaml`, `*.yml`, `*.json`).
pub fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The documents of one file. YAML files may hold several documents; empty ones are skipped.
pub fn parse_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = if path.extension().is_some_and(|e| e == "json") {
        vec![serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?]
    } else {
        serde_saphyr::from_multiple::<Value>(&text)
            .with_context(|| format!("parsing {}", path.display()))?
    };
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Every object in the config files of `dir`, sorted by file name then document order.
/// Duplicated keys are an error: the corpus must be unambiguous.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<CorpusObject>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_config_file(p))
        .collect();
    files.sort();
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for file in files {
        for (i, object) in parse_file(&file)?.into_iter().enumerate() {
            let Some(key) = ObjectKey::of(&object) else {
                bail!(
                    "{}#{}: missing kind or metadata.name",
                    file.display(),
                    i + 1
                );
            };
            let api_version = object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let entry = CorpusObject {
                key: key.clone(),
                api_version,
                file: file.clone(),
                document: i + 1,
                object,
            };
            if let Some(previous) = seen.insert(key.clone(), entry.origin()) {
                bail!("{key} is defined twice: {previous} and {}", entry.origin());
            }
            out.push(entry);
        }
    }
    Ok(out)
}

/// The corpus shipped with this crate.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join("corpus")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_loads_and_covers_every_mcp_kind() {
        let objects = load_dir(&corpus_dir()).unwrap();
        assert!(objects.len() >= 40, "only {} objects", objects.len());
        for kind in [
            "VirtualService",
            "Gateway",
            "DestinationRule",
            "ServiceEntry",
            "Sidecar",
            "EnvoyFilter",
            "WorkloadEntry",
            "WorkloadGroup",
            "AuthorizationPolicy",
            "PeerAuthentication",
            "RequestAuthentication",
            "Telemetry",
            "ProxyConfig",
            "WasmPlugin",
            "TrafficExtension",
        ] {
            assert!(
                objects.iter().any(|o| o.key.kind == kind),
                "no {kind} in the corpus"
            );
        }
    }

    #[test]
    fn yaml_integer_map_keys_become_strings() {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple("a:\n  8080:\n    mode: DISABLE\n---\nb: 1\n").unwrap();
        assert_eq!(docs[0]["a"]["8080"]["mode"], "DISABLE");
        assert_eq!(docs[1]["b"], 1);
    }
}

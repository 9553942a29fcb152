//! Turns file contents into objects: multi-document YAML or JSON, Kubernetes-style.

use serde_json::Value;

use crate::kinds::{self, Known};
use crate::model::{Meta, Name, Object, ObjectRef, Spec};

/// Why one document could not be loaded. `id` is set when the document got far enough to
/// name its object, so the object's last good state can keep serving.
#[derive(Clone, Debug, PartialEq)]
pub struct DocError {
    pub doc: usize,
    pub id: Option<Box<ObjectRef>>,
    pub reason: String,
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "document {}: {id}: {}", self.doc, self.reason),
            None => write!(f, "document {}: {}", self.doc, self.reason),
        }
    }
}

/// Splits a YAML stream on `---` document markers, keeping each document's index. We split
/// ourselves instead of handing the whole stream to the YAML parser so that one broken
/// document does not hide the others.
fn split_yaml(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '#']));
        if marker {
            docs.push(String::new());
        } else if line.trim_end() == "..." {
            continue;
        } else {
            let cur = docs.last_mut().expect("docs is never empty");
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

fn is_blank_yaml(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// Parses a file into documents. `is_json` selects JSON (one value) over YAML (a stream).
/// Empty documents are skipped but keep their index so errors point at the right place.
pub fn parse_file(text: &str, is_json: bool) -> Vec<Result<Object, DocError>> {
    let values: Vec<(usize, Result<Value, String>)> = if is_json {
        vec![(
            0,
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}")),
        )]
    } else {
        split_yaml(text)
            .into_iter()
            .enumerate()
            .filter(|(_, d)| !is_blank_yaml(d))
            .map(|(i, d)| {
                (
                    i,
                    serde_saphyr::from_str::<Value>(&d).map_err(|e| format!("invalid YAML: {e}")),
                )
            })
            .collect()
    };
    let mut out = Vec::new();
    for (doc, value) in values {
        match value {
            Err(reason) => out.push(Err(DocError {
                doc,
                id: None,
                reason,
            })),
            Ok(Value::Null) => {}
            Ok(v) => expand_list(doc, v, &mut out),
        }
    }
    out
}

/// `kind: List` (what `kubectl get -o yaml` prints) holds its objects in `items`.
fn expand_list(doc: usize, v: Value, out: &mut Vec<Result<Object, DocError>>) {
    if v.get("kind").and_then(Value::as_str) == Some("List") {
        match v.get("items") {
            Some(Value::Array(items)) => {
                for item in items {
                    out.push(parse_object(doc, item.clone()));
                }
            }
            _ => out.push(Err(DocError {
                doc,
                id: None,
                reason: "kind List without an items array".into(),
            })),
        }
        return;
    }
    out.push(parse_object(doc, v));
}

fn str_field<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    match v.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None => Err(format!("{field} is required")),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

fn string_map(
    meta: &Value,
    field: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    match meta.get(field) {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!(
                    "metadata.{field}.{k}: must be a string, got {other}"
                )),
            })
            .collect(),
        Some(_) => Err(format!("metadata.{field}: must be a map of strings")),
    }
}

/// Parses one Kubernetes-style object. Errors name the field and the reason.
pub fn parse_object(doc: usize, mut v: Value) -> Result<Object, DocError> {
    let err = |id: Option<ObjectRef>, reason: String| DocError {
        doc,
        id: id.map(Box::new),
        reason,
    };
    if !v.is_object() {
        return Err(err(
            None,
            "a document must be a map with apiVersion, kind, metadata and spec".into(),
        ));
    }
    let api_version = str_field(&v, "apiVersion")
        .map_err(|e| err(None, e))?
        .to_string();
    let kind = str_field(&v, "kind").map_err(|e| err(None, e))?.to_string();
    let meta_v = v.get("metadata").cloned().unwrap_or(Value::Null);
    let name = str_field(&meta_v, "name")
        .map_err(|e| err(None, format!("{kind}: metadata.{e}")))?
        .to_string();
    let namespace = match meta_v.get("namespace") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(err(
                None,
                format!("{kind} {name}: metadata.namespace must be a non-empty string"),
            ));
        }
    };
    let (group, _) = api_version.split_once('/').unwrap_or(("", &api_version));
    let id = ObjectRef {
        group: Name::interned(group),
        kind: Name::interned(&kind),
        namespace: Name::interned(&namespace),
        name: name.into(),
    };
    let known = kinds::lookup(&api_version, &kind).map_err(|e| err(Some(id.clone()), e))?;

    let meta = Meta {
        labels: string_map(&meta_v, "labels").map_err(|e| err(Some(id.clone()), e))?,
        annotations: string_map(&meta_v, "annotations").map_err(|e| err(Some(id.clone()), e))?,
        creation_timestamp: match meta_v.get("creationTimestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(validate_timestamp(s).map_err(|e| err(Some(id.clone()), e))?)
            }
            Some(_) => {
                return Err(err(
                    Some(id.clone()),
                    "metadata.creationTimestamp must be an RFC 3339 string".into(),
                ));
            }
        },
        generation: meta_v
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1),
    };
    if let Some(extra) = v.as_object().and_then(|m| {
        m.keys().find(|k| {
            !matches!(
                k.as_str(),
                "apiVersion" | "kind" | "metadata" | "spec" | "status"
            )
        })
    }) {
        return Err(err(Some(id), format!("unknown top-level field {extra:?}")));
    }
    let spec_v = v
        .get_mut("spec")
        .map(Value::take)
        .unwrap_or(Value::Object(Default::default()));
    let spec = match known {
        Known::Istio(k) => {
            let body = k
                .parse(spec_v)
                .map_err(|e| err(Some(id.clone()), e.to_string()))?;
            Spec::Istio {
                proto: k.proto,
                body,
            }
        }
        Known::Htnn => {
            if !spec_v.is_object() {
                return Err(err(Some(id), "spec must be a map".into()));
            }
            Spec::Htnn(spec_v.to_string().into())
        }
    };
    Ok(Object {
        id,
        api_version,
        meta,
        spec,
    })
}

/// Accepts `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` and returns it unchanged.
fn validate_timestamp(s: &str) -> Result<String, String> {
    crate::time::parse_rfc3339(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("metadata.creationTimestamp {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_indexes() {
        let text = "# leading comment\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {selector: {istio: ingressgateway}}\n---\n: bad: yaml: [\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw2, namespace: team-a}\nspec: {}\n";
        let docs = parse_file(text, false);
        assert_eq!(docs.len(), 3);
        let ok = docs[0].as_ref().unwrap();
        assert_eq!(ok.id.to_string(), "Gateway default/gw");
        let bad = docs[1].as_ref().unwrap_err();
        assert_eq!(bad.doc, 2);
        assert!(bad.reason.starts_with("invalid YAML"), "{bad}");
        assert_eq!(docs[2].as_ref().unwrap().id.namespace, "team-a");
    }

    #[test]
    fn spec_error_names_object_and_field() {
        let text = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [a]\n  http:\n  - timeout: 5x\n";
        let e = parse_file(text, false).remove(0).unwrap_err();
        assert_eq!(
            e.id.as_ref().unwrap().to_string(),
            "VirtualService default/vs"
        );
        assert!(
            e.reason
                .starts_with("spec.http[0].timeout: invalid duration"),
            "{}",
            e.reason
        );
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\nspec:\n  host: a\n  trafficPolicy: {tls: {mod: SIMPLE}}\n";
        let e = parse_file(text, false).remove(0).unwrap_err();
        assert!(
            e.reason.contains("spec.trafficPolicy.tls.mod"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn go_durations_are_accepted() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [a]\n  http:\n  - timeout: 1h30m\n    route: [{destination: {host: a}}]\n";
        let o = parse_file(text, false).remove(0).unwrap();
        assert_eq!(o.spec_json()["http"][0]["timeout"], "5400s");
    }

    #[test]
    fn rejects_unknown_kind_version_and_top_level_field() {
        let e = parse_file(
            "apiVersion: networking.istio.io/v1\nkind: EnvoyFilter\nmetadata: {name: a}\n",
            false,
        )
        .remove(0)
        .unwrap_err();
        assert!(e.reason.contains("not served"), "{}", e.reason);
        let e = parse_file(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            false,
        )
        .remove(0)
        .unwrap_err();
        assert!(e.reason.contains("unsupported kind"), "{}", e.reason);
        let e = parse_file(
            "apiVersion: htnn.mosn.io/v1\nkind: Consumer\nmetadata: {name: a}\nspecc: {}\n",
            false,
        )
        .remove(0)
        .unwrap_err();
        assert!(e.reason.contains("specc"), "{}", e.reason);
    }

    #[test]
    fn json_and_lists() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"htnn.mosn.io/v1","kind":"Consumer","metadata":{"name":"c","labels":{"a":"b"}},"spec":{"auth":{}}}]}"#;
        let o = parse_file(text, true).remove(0).unwrap();
        assert_eq!(o.meta.labels["a"], "b");
        assert!(matches!(o.spec, Spec::Htnn(_)));
    }
}

//! Renders translation results as Kubernetes-style YAML (for `htnn translate` and the golden
//! tests): objects with their specs in istio's JSON form, then statuses.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Output;
use crate::model::{Object, ObjectRef};

pub fn object_json(obj: &Object) -> Value {
    let mut metadata = json!({"name": obj.id.name, "namespace": obj.id.namespace});
    if !obj.meta.labels.is_empty() {
        metadata["labels"] = json!(obj.meta.labels);
    }
    if !obj.meta.annotations.is_empty() {
        metadata["annotations"] = json!(obj.meta.annotations);
    }
    if let Some(t) = &obj.meta.creation_timestamp {
        metadata["creationTimestamp"] = json!(t);
    }
    json!({"apiVersion": obj.api_version, "kind": obj.id.kind, "metadata": metadata, "spec": obj.spec_json()})
}

/// `objects` selects which served objects to print (e.g. only the ones translation changed).
pub fn to_yaml(output: &Output, objects: impl Fn(&ObjectRef, &Object) -> bool) -> String {
    let objs: Vec<Value> = output
        .objects
        .iter()
        .filter(|(id, o)| objects(id, o))
        .map(|(_, o)| object_json(o))
        .collect();
    let statuses: BTreeMap<String, Value> = output
        .statuses
        .iter()
        .map(|(id, s)| (id.to_string(), serde_json::to_value(s).unwrap_or_default()))
        .collect();
    let doc = json!({"objects": objs, "statuses": statuses});
    serde_saphyr::to_string(&doc).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

//! The object model shared by every source: Kubernetes-style objects identified by
//! group, kind, namespace and name.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// Identity of an object. Two objects with the same ref are the same object whatever the
/// apiVersion they were written with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The metadata we keep; everything else in `metadata` (uid, managedFields, ...) is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct Meta {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 `metadata.creationTimestamp`, when the user gave one.
    pub creation_timestamp: Option<String>,
    pub generation: i64,
}

/// A parsed object's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// An istio config object: the protobuf-encoded body (`proto` is its full message name)
    /// and the proto3-JSON form of the parsed message, for debugging and tests.
    Istio {
        proto: &'static str,
        body: Vec<u8>,
        json: Value,
    },
    /// An HTNN object, kept as JSON; its meaning is the translator's business.
    Htnn(Value),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub id: ObjectRef,
    pub api_version: String,
    pub meta: Meta,
    pub spec: Spec,
}

impl Object {
    pub fn spec_json(&self) -> &Value {
        match &self.spec {
            Spec::Istio { json, .. } => json,
            Spec::Htnn(v) => v,
        }
    }
}

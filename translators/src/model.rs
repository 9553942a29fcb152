//! The object model shared by every source: Kubernetes-style objects identified by
//! group, kind, namespace and name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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
    /// An istio config object: the protobuf-encoded body (`proto` is its full message name).
    /// Only the encoding is kept: a JSON tree costs ten times its size in memory, and is
    /// needed only for debug views (see [`Object::spec_json`]).
    Istio { proto: &'static str, body: Vec<u8> },
    /// An HTNN object's spec as compact JSON text (keys sorted): a fraction of the memory of
    /// a JSON tree, and parsed only when the object changes. Its meaning is the translator's
    /// business.
    Htnn(Arc<str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub id: ObjectRef,
    pub api_version: String,
    pub meta: Meta,
    pub spec: Spec,
}

impl Object {
    /// The spec as JSON: istio's proto3-JSON form of the body (decoded on each call), or the
    /// HTNN spec as written.
    pub fn spec_json(&self) -> Cow<'_, Value> {
        match &self.spec {
            Spec::Istio { proto, body } => Cow::Owned(
                crate::kinds::istio_kind_by_proto(proto).map_or(Value::Null, |k| k.json(body)),
            ),
            Spec::Htnn(text) => Cow::Owned(serde_json::from_str(text).unwrap_or(Value::Null)),
        }
    }
}

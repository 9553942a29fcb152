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
    pub group: Name,
    pub kind: Name,
    pub namespace: Name,
    pub name: Name,
}

/// An immutable, cheaply cloned string: object refs are keys of a dozen indexes, and cloning
/// four `String`s into each cost more memory than the objects themselves.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The one shared copy of `s`, for the few distinct groups, kinds and namespaces.
    pub fn interned(s: &str) -> Self {
        static NAMES: std::sync::LazyLock<std::sync::Mutex<std::collections::BTreeSet<Name>>> =
            std::sync::LazyLock::new(Default::default);
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.get(s) {
            return n.clone();
        }
        let n = Name::from(s);
        names.insert(n.clone());
        n
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Self(s.as_str().into())
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0.to_string()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
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

//! What is served: per config type, the full set of resources and a content-derived version.
//!
//! A [`Snapshot`] is immutable and published through a `tokio::sync::watch` channel
//! (level-triggered: a slow connection only ever sees the latest snapshot). The channel
//! holds `None` until every source finished its initial load, because an answer before that
//! would make istiod delete everything it has (istio-mcp.md §8).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};

/// A config type as istiod names it, without the version: `networking.istio.io/VirtualService`.
///
/// istiod requests `group/version/Kind` and only accepts answers carrying the exact string it
/// asked for, while the version differs between istio releases; keying on group and kind lets
/// one server answer every istio version by echoing the requested type URL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeKey {
    pub group: String,
    pub kind: String,
}

impl TypeKey {
    pub fn new(group: &str, kind: &str) -> Self {
        Self {
            group: group.to_string(),
            kind: kind.to_string(),
        }
    }

    /// Parses an MCP type URL of the form `group/version/Kind` (`core` for the empty group).
    pub fn from_type_url(type_url: &str) -> Option<Self> {
        let mut parts = type_url.split('/');
        let (group, _version, kind) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || group.is_empty() || kind.is_empty() {
            return None;
        }
        Some(Self::new(group, kind))
    }

    /// Position in the safe push order when resources are added or changed: what a route
    /// depends on (services, destination rules) first, then policy (EnvoyFilter), then
    /// the routes themselves. Removals use the reverse order.
    pub fn push_rank(&self) -> u8 {
        match self.kind.as_str() {
            "ServiceEntry" | "DestinationRule" | "WorkloadEntry" | "WorkloadGroup" => 0,
            "EnvoyFilter" => 1,
            "Gateway" | "VirtualService" => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for TypeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.kind)
    }
}

impl ServedResource {
    /// A hash of name and version; a type's version is the sum of these.
    pub fn digest(&self) -> u64 {
        let mut hasher = Sha256::new();
        hasher.update(self.name.as_bytes());
        hasher.update([0]);
        hasher.update(self.version.as_bytes());
        let d = hasher.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }
}

/// One served resource: its `ns/name` and the encoded `istio.mcp.v1alpha1.Resource`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedResource {
    pub name: String,
    /// `Metadata.version`: content hash of this resource.
    pub version: String,
    pub resource: Any,
}

/// The full state of one type.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TypeSnapshot {
    /// Sum of the resources' digests (name and content hash); changes only when the content
    /// changes.
    pub version: String,
    /// Sorted by name. Shared between snapshots: a change re-encodes only what it touched.
    pub resources: Vec<Arc<ServedResource>>,
}

impl TypeSnapshot {
    pub fn new(resources: Vec<ServedResource>) -> Self {
        Self::from_shared(resources.into_iter().map(Arc::new).collect())
    }

    pub fn from_shared(mut resources: Vec<Arc<ServedResource>>) -> Self {
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        let sum = resources
            .iter()
            .fold(0u64, |acc, r| acc.wrapping_add(r.digest()));
        Self::with_digest_sum(resources, sum)
    }

    /// `resources` sorted by name, with `sum` the wrapping sum of their
    /// [`ServedResource::digest`]s: the type's version then costs nothing to keep up to date
    /// when one resource changes among thousands.
    pub fn with_digest_sum(resources: Vec<Arc<ServedResource>>, sum: u64) -> Self {
        Self {
            version: format!("{sum:016x}"),
            resources,
        }
    }

    pub fn anys(&self) -> Vec<Any> {
        self.resources.iter().map(|r| r.resource.clone()).collect()
    }
}

/// Everything served, by type. Types absent here are answered with an empty set.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Snapshot {
    pub types: BTreeMap<TypeKey, Arc<TypeSnapshot>>,
}

/// The answer for a type that has no resources.
pub static EMPTY: std::sync::LazyLock<Arc<TypeSnapshot>> =
    std::sync::LazyLock::new(|| Arc::new(TypeSnapshot::new(Vec::new())));

impl Snapshot {
    /// The state of `key`; an empty set when nothing of that type exists.
    pub fn get(&self, key: &TypeKey) -> Arc<TypeSnapshot> {
        self.types
            .get(key)
            .cloned()
            .unwrap_or_else(|| EMPTY.clone())
    }

    /// A short version over all types, for logs and metrics.
    pub fn version(&self) -> String {
        let mut hasher = Sha256::new();
        for (k, t) in &self.types {
            hasher.update(k.to_string().as_bytes());
            hasher.update(t.version.as_bytes());
        }
        hex::encode(&hasher.finalize()[..8])
    }
}

/// The stage of a type in a change from `old` to `new`, lowest first: types that gain or
/// change resources first, in ascending [`TypeKey::push_rank`], then types that only lose
/// resources, in descending rank. A route is thus sent after its policy when added and before
/// it when removed.
pub fn push_stage(key: &TypeKey, old: &TypeSnapshot, new: &TypeSnapshot) -> (u8, u8) {
    let old_versions: BTreeMap<&str, &str> = old
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.version.as_str()))
        .collect();
    let only_removals = new
        .resources
        .iter()
        .all(|r| old_versions.get(r.name.as_str()) == Some(&r.version.as_str()));
    if only_removals {
        (1, u8::MAX - key.push_rank())
    } else {
        (0, key.push_rank())
    }
}

/// The types among `candidates` that differ between `old` and `new`, in push order
/// (see [`push_stage`]).
pub fn push_order(old: &Snapshot, new: &Snapshot, candidates: &[TypeKey]) -> Vec<TypeKey> {
    let mut changed: Vec<((u8, u8), TypeKey)> = candidates
        .iter()
        .filter_map(|key| {
            let (o, n) = (old.get(key), new.get(key));
            (o.version != n.version).then(|| (push_stage(key, &o, &n), key.clone()))
        })
        .collect();
    changed.sort();
    changed.into_iter().map(|(_, k)| k).collect()
}

//! Builds the served [`Snapshot`] from the current objects: each istio object becomes an
//! `istio.mcp.v1alpha1.Resource` with a content-hash version and a stable creation time.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use htnn_proto::istio::mcp::v1alpha1::{Metadata, Resource};

use crate::model::{Object, ObjectRef, Spec};
use crate::snapshot::{ServedResource, Snapshot, TypeKey, TypeSnapshot};
use crate::time::DEFAULT_CREATE_TIME;

pub const RESOURCE_TYPE_URL: &str = "type.googleapis.com/istio.mcp.v1alpha1.Resource";

fn create_time(obj: &Object) -> (i64, i32) {
    obj.meta
        .creation_timestamp
        .as_deref()
        .and_then(|t| crate::time::parse_rfc3339(t).ok())
        .unwrap_or(DEFAULT_CREATE_TIME)
}

/// Encodes one istio object as an MCP resource. Returns `None` for non-istio objects.
pub fn to_resource(obj: &Object) -> Option<ServedResource> {
    let Spec::Istio { proto, body, .. } = &obj.spec else {
        return None;
    };
    let (seconds, nanos) = create_time(obj);
    let mut metadata = Metadata {
        name: format!("{}/{}", obj.id.namespace, obj.id.name),
        create_time: Some(pbjson_types::Timestamp { seconds, nanos }),
        version: String::new(),
        labels: obj.meta.labels.clone(),
        annotations: obj.meta.annotations.clone(),
    };
    let body = pbjson_types::Any {
        type_url: format!("type.googleapis.com/{proto}"),
        value: body.clone().into(),
    };
    // The version covers everything istiod stores, so it changes exactly when the content does.
    let mut hasher = Sha256::new();
    hasher.update(metadata.encode_to_vec());
    hasher.update(body.encode_to_vec());
    metadata.version = hex::encode(&hasher.finalize()[..8]);
    let version = metadata.version.clone();
    let resource = Resource {
        metadata: Some(metadata),
        body: Some(body),
    };
    Some(ServedResource {
        name: format!("{}/{}", obj.id.namespace, obj.id.name),
        version,
        resource: Any {
            type_url: RESOURCE_TYPE_URL.to_string(),
            value: resource.encode_to_vec(),
        },
    })
}

/// The snapshot for a set of objects, from scratch.
pub fn build<O: std::borrow::Borrow<Object>>(objects: &BTreeMap<ObjectRef, O>) -> Snapshot {
    let mut by_type: BTreeMap<TypeKey, Vec<ServedResource>> = BTreeMap::new();
    for obj in objects.values() {
        let obj = obj.borrow();
        if let Some(r) = to_resource(obj) {
            by_type
                .entry(TypeKey::new(&obj.id.group, &obj.id.kind))
                .or_default()
                .push(r);
        }
    }
    Snapshot {
        types: by_type
            .into_iter()
            .map(|(k, v)| (k, Arc::new(TypeSnapshot::new(v))))
            .collect(),
    }
}

/// Keeps the encoding of every served object and rebuilds the snapshot of a type only when
/// one of its objects changed. The result always equals [`build`] of the same objects.
#[derive(Default)]
pub struct Encoder {
    /// Per type: resources by name, and the sum of their digests.
    by_type: BTreeMap<TypeKey, (BTreeMap<String, Arc<ServedResource>>, u64)>,
    snapshot: Snapshot,
}

impl Encoder {
    /// Re-encodes the objects in `changed` (present in `objects`, or removed). Returns whether
    /// any type's content changed.
    pub fn update<'a>(
        &mut self,
        objects: &BTreeMap<ObjectRef, Arc<Object>>,
        changed: impl IntoIterator<Item = &'a ObjectRef>,
    ) -> bool {
        let mut dirty = std::collections::BTreeSet::new();
        for id in changed {
            let key = TypeKey::new(&id.group, &id.kind);
            let name = format!("{}/{}", id.namespace, id.name);
            match objects.get(id).and_then(|o| to_resource(o)) {
                Some(r) => {
                    let (resources, sum) = self.by_type.entry(key.clone()).or_default();
                    if resources.get(&name).map(|old| &old.version) != Some(&r.version) {
                        *sum = sum.wrapping_add(r.digest());
                        if let Some(old) = resources.insert(name, Arc::new(r)) {
                            *sum = sum.wrapping_sub(old.digest());
                        }
                        dirty.insert(key);
                    }
                }
                None => {
                    if let Some((resources, sum)) = self.by_type.get_mut(&key)
                        && let Some(old) = resources.remove(&name)
                    {
                        *sum = sum.wrapping_sub(old.digest());
                        dirty.insert(key);
                    }
                }
            }
        }
        for key in &dirty {
            match self.by_type.get(key).filter(|(r, _)| !r.is_empty()) {
                Some((resources, sum)) => {
                    let resources = resources.values().cloned().collect();
                    let t = TypeSnapshot::with_digest_sum(resources, *sum);
                    self.snapshot.types.insert(key.clone(), Arc::new(t));
                }
                None => {
                    self.by_type.remove(key);
                    self.snapshot.types.remove(key);
                }
            }
        }
        !dirty.is_empty()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// The JSON shown at `/debug/snapshot`: per type, what is served and the parsed spec.
pub fn debug_view(snapshot: &Snapshot, objects: &BTreeMap<ObjectRef, Arc<Object>>) -> Value {
    let mut types = serde_json::Map::new();
    for (key, t) in &snapshot.types {
        let resources: Vec<Value> = t
            .resources
            .iter()
            .map(|r| {
                let (ns, name) = r.name.split_once('/').unwrap_or(("", &r.name));
                let id = ObjectRef {
                    group: key.group.as_str().into(),
                    kind: key.kind.as_str().into(),
                    namespace: ns.into(),
                    name: name.into(),
                };
                let obj = objects.get(&id);
                json!({
                    "name": r.name,
                    "version": r.version,
                    "labels": obj.map(|o| &o.meta.labels),
                    "annotations": obj.map(|o| &o.meta.annotations),
                    "creationTimestamp": obj.and_then(|o| o.meta.creation_timestamp.clone()),
                    "spec": obj.map(|o| o.spec_json().into_owned()),
                })
            })
            .collect();
        types.insert(
            key.to_string(),
            json!({"version": t.version, "resources": resources}),
        );
    }
    json!({"version": snapshot.version(), "types": types})
}

#[cfg(test)]
mod tests {
    use super::*;
    use htnn_translators::parse::parse_file;

    fn objects(yaml: &str) -> BTreeMap<ObjectRef, Object> {
        parse_file(yaml, false)
            .into_iter()
            .map(|o| o.unwrap())
            .map(|o| (o.id.clone(), o))
            .collect()
    }

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: ns, labels: {app: a}}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n";

    fn decode(r: &ServedResource) -> Resource {
        Resource::decode(r.resource.value.as_slice()).unwrap()
    }

    #[test]
    fn resource_envelope_is_what_istiod_expects() {
        let snap = build(&objects(VS));
        let t = snap.get(&TypeKey::new("networking.istio.io", "VirtualService"));
        assert_eq!(t.resources.len(), 1);
        let r = decode(&t.resources[0]);
        let m = r.metadata.unwrap();
        assert_eq!(m.name, "ns/vs");
        assert_eq!(m.labels["app"], "a");
        assert_eq!(m.create_time.unwrap().seconds, DEFAULT_CREATE_TIME.0);
        assert_eq!(
            r.body.unwrap().type_url,
            "type.googleapis.com/istio.networking.v1alpha3.VirtualService"
        );
        assert_eq!(t.resources[0].resource.type_url, RESOURCE_TYPE_URL);
    }

    #[test]
    fn versions_follow_content_only() {
        let a = build(&objects(VS));
        let b = build(&objects(VS));
        assert_eq!(a, b);
        let c = build(&objects(&VS.replace("hosts: [a]", "hosts: [b]")));
        let key = TypeKey::new("networking.istio.io", "VirtualService");
        assert_ne!(a.get(&key).version, c.get(&key).version);
        let d = build(&objects(&VS.replace("app: a", "app: b")));
        assert_ne!(a.get(&key).version, d.get(&key).version);
        let e = build(&objects(&VS.replace(
            "labels: {app: a}",
            "labels: {app: a}, creationTimestamp: '2024-01-01T00:00:00Z'",
        )));
        assert_eq!(
            decode(&e.get(&key).resources[0])
                .metadata
                .unwrap()
                .create_time
                .unwrap()
                .seconds,
            1_704_067_200
        );
    }

    #[test]
    fn encoder_equals_a_build_from_scratch_after_every_change() {
        let vs = |name: &str, host: &str| {
            objects(
                &VS.replace("name: vs", &format!("name: {name}"))
                    .replace("hosts: [a]", &format!("hosts: [{host}]")),
            )
            .into_values()
            .next()
            .unwrap()
        };
        let mut current: BTreeMap<ObjectRef, Arc<Object>> = BTreeMap::new();
        let mut encoder = Encoder::default();
        let steps: Vec<(&str, Option<&str>)> = vec![
            ("a", Some("hx")),
            ("b", Some("hx")),
            ("a", Some("hy")),
            ("a", Some("hy")),
            ("b", None),
            ("c", Some("hz")),
            ("a", None),
            ("c", None),
        ];
        for (name, host) in steps {
            let obj = vs(name, host.unwrap_or("hx"));
            let id = obj.id.clone();
            match host {
                Some(_) => current.insert(id.clone(), Arc::new(obj)),
                None => current.remove(&id),
            };
            let before = encoder.snapshot().clone();
            let changed = encoder.update(&current, [&id]);
            assert_eq!(
                *encoder.snapshot(),
                build(&current),
                "after {name} {host:?}"
            );
            assert_eq!(changed, before != *encoder.snapshot());
        }
        assert!(encoder.snapshot().types.is_empty());
    }
}

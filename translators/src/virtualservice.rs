//! What the translator needs to know about VirtualServices: their `http[]` routes and the
//! Envoy route names istiod will give them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::kinds;
use crate::model::{Object, ObjectRef, Spec};

pub struct HttpRoute {
    pub name: Option<String>,
    /// Names of the entries of `match[]` (empty string when unnamed).
    pub match_names: Vec<String>,
}

pub struct VsRoutes {
    pub hosts: usize,
    pub http: Vec<HttpRoute>,
    /// The name given to unnamed routes: `<namespace>.<name>`.
    pub generated_name: String,
}

pub fn index(input: &BTreeMap<ObjectRef, Object>) -> BTreeMap<ObjectRef, VsRoutes> {
    input
        .iter()
        .filter(|(id, _)| id.group == crate::ISTIO_NETWORKING && id.kind == "VirtualService")
        .map(|(id, obj)| {
            let spec = obj.spec_json();
            let http = spec
                .get("http")
                .and_then(Value::as_array)
                .map(|routes| {
                    routes
                        .iter()
                        .map(|r| HttpRoute {
                            name: r
                                .get("name")
                                .and_then(Value::as_str)
                                .filter(|s| !s.is_empty())
                                .map(String::from),
                            match_names: r
                                .get("match")
                                .and_then(Value::as_array)
                                .map(|ms| {
                                    ms.iter()
                                        .map(|m| {
                                            m.get("name")
                                                .and_then(Value::as_str)
                                                .unwrap_or_default()
                                                .to_string()
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let hosts = spec
                .get("hosts")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            (
                id.clone(),
                VsRoutes {
                    hosts,
                    http,
                    generated_name: format!("{}.{}", id.namespace, id.name),
                },
            )
        })
        .collect()
}

impl VsRoutes {
    pub fn index_of(&self, section: &str) -> Option<usize> {
        self.http
            .iter()
            .position(|r| r.name.as_deref() == Some(section))
    }

    pub fn targetable(&self) -> Result<(), String> {
        if self.hosts == 0 {
            return Err(
                "the VirtualService has no hosts (delegate VirtualServices are not supported)"
                    .into(),
            );
        }
        if self.http.is_empty() {
            return Err("the VirtualService has no http routes".into());
        }
        Ok(())
    }

    fn http_name(&self, idx: usize) -> &str {
        self.http[idx]
            .name
            .as_deref()
            .unwrap_or(&self.generated_name)
    }

    /// istiod names an Envoy route `http[].name`, plus `.<match name>` for a named match.
    pub fn envoy_route_names(&self, idx: usize) -> Vec<String> {
        let base = self.http_name(idx);
        let mut names: Vec<String> = self.http[idx]
            .match_names
            .iter()
            .map(|m| {
                if m.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}.{m}")
                }
            })
            .collect();
        if names.is_empty() {
            names.push(base.to_string());
        }
        names.sort();
        names.dedup();
        names
    }

    fn all_route_names(&self) -> Vec<String> {
        (0..self.http.len())
            .flat_map(|i| self.envoy_route_names(i))
            .collect()
    }

    /// EnvoyFilters match routes by name across every gateway, so a policy may only target a
    /// VirtualService whose route names no other VirtualService uses.
    pub fn route_name_clash(
        &self,
        me: &ObjectRef,
        all: &BTreeMap<ObjectRef, VsRoutes>,
    ) -> Option<String> {
        let mine = self.all_route_names();
        for (other_id, other) in all {
            if other_id == me {
                continue;
            }
            // Unnamed routes of untargeted VirtualServices stay unnamed, so only named ones count.
            let theirs: Vec<String> = (0..other.http.len())
                .filter(|&i| other.http[i].name.is_some())
                .flat_map(|i| other.envoy_route_names(i))
                .collect();
            if let Some(n) = mine.iter().find(|n| theirs.contains(n)) {
                return Some(format!(
                    "route name {n:?} is also used by VirtualService {}/{}; route names must be unique to be targeted",
                    other_id.namespace, other_id.name
                ));
            }
        }
        None
    }

    /// The object with its unnamed `http[]` routes named, or `None` if all are named.
    pub fn with_route_names(&self, obj: &Object) -> Option<Object> {
        if self.http.iter().all(|r| r.name.is_some()) {
            return None;
        }
        let mut spec = obj.spec_json().clone();
        for r in spec.get_mut("http")?.as_array_mut()? {
            if r.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                r["name"] = Value::String(self.generated_name.clone());
            }
        }
        let kind = kinds::istio_kind(crate::ISTIO_NETWORKING, "VirtualService")?;
        let (body, json) = kind.parse(spec).ok()?;
        Some(Object {
            spec: Spec::Istio {
                proto: kind.proto,
                body,
                json,
            },
            ..obj.clone()
        })
    }
}

//! What the translator needs to know about VirtualServices: their `http[]` routes and the
//! Envoy route names istiod will give them.

use htnn_proto::istio::networking::v1alpha3 as net;
use prost::Message;

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
    /// `spec.gateways` other than `mesh`, resolved to `<namespace>/<name>`, each with whether
    /// that istio Gateway exists. Empty when the VS applies only to sidecars.
    pub gateways: Vec<(String, bool)>,
}

/// istiod's reading of a `spec.gateways` entry (`resolveGatewayName`): `ns/name`, `./name`,
/// a bare name in the VirtualService's namespace, or the legacy `name.ns.svc.cluster.local`.
fn resolve_gateway(vs_namespace: &str, gw: &str) -> (String, String) {
    match gw.split_once('/') {
        Some((".", name)) => (vs_namespace.to_string(), name.to_string()),
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => match gw.split_once('.') {
            None => (vs_namespace.to_string(), gw.to_string()),
            Some((name, rest)) => {
                let ns = rest.split_once('.').map_or(rest, |(ns, _)| ns);
                (ns.to_string(), name.to_string())
            }
        },
    }
}

impl VsRoutes {
    /// What the translator needs of VirtualService `id`; `gateway_exists(ns, name)` tells
    /// whether an istio Gateway exists.
    pub fn of(id: &ObjectRef, obj: &Object, gateway_exists: impl Fn(&str, &str) -> bool) -> Self {
        // Read from the encoded message: cheaper than its JSON form, and the same truth.
        let spec = match &obj.spec {
            Spec::Istio { body, .. } => net::VirtualService::decode(body.as_slice()).ok(),
            Spec::Htnn(_) => None,
        }
        .unwrap_or_default();
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let http = spec
            .http
            .iter()
            .map(|r| HttpRoute {
                name: non_empty(&r.name),
                match_names: r.r#match.iter().map(|m| m.name.clone()).collect(),
            })
            .collect();
        let hosts = spec.hosts.len();
        // No `gateways` means `[mesh]`, i.e. sidecars only.
        let gateways = spec
            .gateways
            .iter()
            .filter(|g| *g != "mesh")
            .map(|g| {
                let (ns, name) = resolve_gateway(&id.namespace, g);
                let found = gateway_exists(&ns, &name);
                (format!("{ns}/{name}"), found)
            })
            .collect();
        VsRoutes {
            hosts,
            http,
            generated_name: format!("{}.{}", id.namespace, id.name),
            gateways,
        }
    }

    /// Every `http[]` entry named `section`. istio allows a name twice; such entries share
    /// their Envoy route name, so a sectionName must reach all of them (HTNN buckets policies
    /// by route name) or the chains computed for them would differ and one would be lost.
    pub fn indices_of<'a>(&'a self, section: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.http
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.name.as_deref() == Some(section))
            .map(|(i, _)| i)
    }

    pub fn index_of(&self, section: &str) -> Option<usize> {
        self.http
            .iter()
            .position(|r| r.name.as_deref() == Some(section))
    }

    /// HTNN's `ValidateVirtualService` (checked in the same order), minus "route name is
    /// empty": we name unnamed routes ourselves.
    pub fn targetable(&self) -> Result<(), String> {
        if self.http.is_empty() {
            return Err("the VirtualService has no http routes".into());
        }
        if self.hosts == 0 {
            return Err(
                "the VirtualService has no hosts (delegate VirtualServices are not supported)"
                    .into(),
            );
        }
        Ok(())
    }

    /// HTNN resolves a VirtualService's gateways after its sectionName and reports
    /// `TargetNotFound` "all gateways are not found or unsupported" when none is usable:
    /// `mesh` is skipped (our EnvoyFilters only patch gateways) and the Gateway must exist.
    /// Unlike HTNN, a Gateway in another namespace is usable: our EnvoyFilters live in the
    /// root namespace and reach every gateway.
    pub fn gateway_problem(&self) -> Option<String> {
        if self.gateways.is_empty() {
            return Some(
                "all gateways are not found or unsupported: the VirtualService is bound to no gateway (only mesh)"
                    .into(),
            );
        }
        if self.gateways.iter().any(|(_, found)| *found) {
            return None;
        }
        let missing: Vec<&str> = self.gateways.iter().map(|(g, _)| g.as_str()).collect();
        Some(format!(
            "all gateways are not found or unsupported: Gateway {} not found",
            missing.join(", ")
        ))
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

    /// Every Envoy route name of this VirtualService, unnamed routes under their generated name.
    pub fn all_route_names(&self) -> Vec<String> {
        (0..self.http.len())
            .flat_map(|i| self.envoy_route_names(i))
            .collect()
    }

    /// The Envoy route names of the named `http[]` routes: what this VirtualService claims
    /// at its gateways even when no policy targets it (unnamed routes of untargeted
    /// VirtualServices stay unnamed).
    pub fn named_route_names(&self) -> Vec<String> {
        (0..self.http.len())
            .filter(|&i| self.http[i].name.is_some())
            .flat_map(|i| self.envoy_route_names(i))
            .collect()
    }

    /// Whether this VirtualService reaches any gateway's routes, which are all our
    /// EnvoyFilters patch.
    pub fn at_gateways(&self) -> bool {
        !self.gateways.is_empty()
    }

    /// The object with its unnamed `http[]` routes named, or `None` if all are named.
    pub fn with_route_names(&self, obj: &Object) -> Option<Object> {
        if self.http.iter().all(|r| r.name.is_some()) {
            return None;
        }
        let Spec::Istio { proto, body } = &obj.spec else {
            return None;
        };
        let mut spec = net::VirtualService::decode(body.as_slice()).ok()?;
        for r in spec.http.iter_mut().filter(|r| r.name.is_empty()) {
            r.name = self.generated_name.clone();
        }
        Some(Object {
            spec: Spec::Istio {
                proto,
                body: spec.encode_to_vec(),
            },
            ..obj.clone()
        })
    }
}

/// A VirtualService with one host and the named `http[]` routes, for tests.
#[cfg(test)]
pub(crate) fn test_routes(gateways: Vec<(String, bool)>, names: &[&str]) -> VsRoutes {
    VsRoutes {
        hosts: 1,
        http: names
            .iter()
            .map(|n| HttpRoute {
                name: Some(n.to_string()),
                match_names: vec![],
            })
            .collect(),
        generated_name: "ns.vs".into(),
        gateways,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_routes as routes;

    #[test]
    fn gateway_names_resolve_like_istiod() {
        let r = |g| resolve_gateway("ns", g);
        assert_eq!(r("gw"), ("ns".into(), "gw".into()));
        assert_eq!(r("./gw"), ("ns".into(), "gw".into()));
        assert_eq!(r("istio-system/gw"), ("istio-system".into(), "gw".into()));
        assert_eq!(
            r("gw.istio-system.svc.cluster.local"),
            ("istio-system".into(), "gw".into())
        );
        assert_eq!(r("gw.istio-system"), ("istio-system".into(), "gw".into()));
    }

    #[test]
    fn gateway_problems() {
        assert!(
            routes(vec![], &["r"])
                .gateway_problem()
                .unwrap()
                .contains("only mesh")
        );
        let missing = routes(vec![("a/x".into(), false), ("b/y".into(), false)], &["r"]);
        assert!(
            missing
                .gateway_problem()
                .unwrap()
                .ends_with("Gateway a/x, b/y not found")
        );
        let one = routes(vec![("a/x".into(), false), ("b/y".into(), true)], &["r"]);
        assert_eq!(one.gateway_problem(), None);
    }
}

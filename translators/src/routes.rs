//! Route-name bookkeeping, indexed: which VirtualServices use which Envoy route name.
//!
//! EnvoyFilters match routes by name across every gateway, so a policy may only target a
//! VirtualService whose route names no other gateway-bound VirtualService uses. Checking that
//! by comparing against every VirtualService made translation quadratic; this index answers
//! it per name.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::ObjectRef;
use crate::small::VecMap;
use crate::virtualservice::VsRoutes;

#[derive(Default)]
pub(crate) struct RouteIndex {
    /// Envoy route name -> gateway-bound VirtualServices with a named route of that name.
    claimed: BTreeMap<String, VecMap<ObjectRef, ()>>,
    /// Envoy route name -> VirtualServices with that name among all their route names
    /// (named, or generated for unnamed routes): those whose clash check reads `claimed[name]`.
    owners: BTreeMap<String, VecMap<ObjectRef, ()>>,
}

fn add(map: &mut BTreeMap<String, VecMap<ObjectRef, ()>>, names: Vec<String>, id: &ObjectRef) {
    for n in names {
        map.entry(n).or_default().insert(id.clone(), ());
    }
}

fn remove(map: &mut BTreeMap<String, VecMap<ObjectRef, ()>>, names: Vec<String>, id: &ObjectRef) {
    for n in names {
        if let Some(set) = map.get_mut(&n) {
            set.remove(id);
            if set.is_empty() {
                map.remove(&n);
            }
        }
    }
}

fn claims(vs: &VsRoutes) -> Vec<String> {
    // Mesh-only VirtualServices never reach a gateway's routes.
    if vs.at_gateways() {
        vs.named_route_names()
    } else {
        Vec::new()
    }
}

impl RouteIndex {
    pub fn insert(&mut self, id: &ObjectRef, vs: &VsRoutes) {
        add(&mut self.claimed, claims(vs), id);
        add(&mut self.owners, vs.all_route_names(), id);
    }

    pub fn remove(&mut self, id: &ObjectRef, vs: &VsRoutes) {
        remove(&mut self.claimed, claims(vs), id);
        remove(&mut self.owners, vs.all_route_names(), id);
    }

    /// The VirtualServices whose clash check changes when `vs` appears or disappears.
    pub fn affected_by(&self, vs: &VsRoutes) -> BTreeSet<ObjectRef> {
        claims(vs)
            .iter()
            .filter_map(|n| self.owners.get(n))
            .flat_map(VecMap::keys)
            .cloned()
            .collect()
    }

    /// Why VirtualService `me` cannot be targeted because another one uses one of its route
    /// names: the first such VirtualService by id, and the first of `me`'s names it uses.
    pub fn clash(
        &self,
        me: &ObjectRef,
        vs: &VsRoutes,
        all: &BTreeMap<ObjectRef, VsRoutes>,
    ) -> Option<String> {
        let mine = vs.all_route_names();
        let other = mine
            .iter()
            .filter_map(|n| self.claimed.get(n))
            .flat_map(VecMap::keys)
            .filter(|id| *id != me)
            .min()?;
        let theirs = claims(&all[other]);
        let n = mine.iter().find(|n| theirs.contains(n))?;
        Some(format!(
            "route name {n:?} is also used by VirtualService {}/{}; route names must be unique to be targeted",
            other.namespace, other.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(at_gateway: bool, names: &[&str]) -> VsRoutes {
        let gateways = if at_gateway {
            vec![("istio-system/gw".into(), true)]
        } else {
            vec![]
        };
        crate::virtualservice::test_routes(gateways, names)
    }

    fn id(name: &str) -> ObjectRef {
        ObjectRef {
            group: crate::ISTIO_NETWORKING.into(),
            kind: "VirtualService".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn mesh_only_virtual_services_do_not_clash_and_removal_clears() {
        let mut all = BTreeMap::new();
        let mut index = RouteIndex::default();
        for (name, vs) in [
            ("a", routes(true, &["orders"])),
            ("mesh", routes(false, &["orders"])),
        ] {
            index.insert(&id(name), &vs);
            all.insert(id(name), vs);
        }
        assert_eq!(index.clash(&id("a"), &all[&id("a")], &all), None);
        let b = routes(true, &["x", "orders"]);
        assert_eq!(
            index.affected_by(&b).into_iter().collect::<Vec<_>>(),
            [id("a"), id("mesh")]
        );
        index.insert(&id("b"), &b);
        all.insert(id("b"), b);
        let clash = index.clash(&id("a"), &all[&id("a")], &all).unwrap();
        assert!(clash.contains("\"orders\"") && clash.contains("VirtualService ns/b"));
        let b = all.remove(&id("b")).unwrap();
        index.remove(&id("b"), &b);
        assert_eq!(index.clash(&id("a"), &all[&id("a")], &all), None);
        assert!(index.claimed.keys().all(|n| n == "orders"));
    }
}

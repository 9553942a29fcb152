//! HTNN's merge rules for the policies on one VirtualService: per Envoy route, policies sort
//! by scope (a rule before the whole route), then creation time, then namespace/name; the
//! first policy wins per plugin, without field-level merge.

use std::collections::{BTreeMap, BTreeSet};

use crate::jsontext::{object, quoted};
use crate::policy::{ConfigText, PluginEntry};
use crate::virtualservice::VsRoutes;
use crate::{Policy, Scope};

/// What one VirtualService's policies produce: the chain of every Envoy route that has
/// plugins, and the policies that contributed at least one plugin (`ns/name`).
pub(crate) struct Merged {
    /// Envoy route name -> its chain as compact JSON.
    pub chains: Vec<(String, String)>,
    pub contributors: BTreeSet<String>,
}

/// A policy's plugins for one route, with the scope they come from.
type Contribution<'a> = (Scope, &'a Policy, &'a BTreeMap<String, PluginEntry>);

/// `policies` in their listing order (real policies by id, then the embedded one); ties in
/// merge order keep it.
pub(crate) fn merge(vs: &VsRoutes, namespace: &str, policies: &[&Policy]) -> Merged {
    // http index -> (scope, policy, its plugins for that route).
    let mut per_route: BTreeMap<usize, Vec<Contribution>> = BTreeMap::new();
    for p in policies {
        let section = p
            .spec
            .target_ref
            .as_ref()
            .and_then(|t| t.section_name.as_deref());
        if !p.spec.filters.is_empty() {
            match section {
                Some(s) => {
                    for i in vs.indices_of(s) {
                        per_route
                            .entry(i)
                            .or_default()
                            .push((Scope::Rule, p, &p.spec.filters));
                    }
                }
                None => {
                    for i in 0..vs.http.len() {
                        per_route
                            .entry(i)
                            .or_default()
                            .push((Scope::Route, p, &p.spec.filters));
                    }
                }
            }
        }
        for sub in &p.spec.sub_policies {
            for i in vs.indices_of(&sub.section_name) {
                per_route
                    .entry(i)
                    .or_default()
                    .push((Scope::Rule, p, &sub.filters));
            }
        }
    }
    let mut chains: BTreeMap<String, String> = BTreeMap::new();
    let mut contributors = BTreeSet::new();
    for (idx, mut contribs) in per_route {
        contribs.sort_by(|a, b| (a.0, &a.1.order).cmp(&(b.0, &b.1.order)));
        let mut merged: BTreeMap<
            htnn_plugins::registry::OrderKey,
            (&dyn htnn_plugins::Plugin, &ConfigText),
        > = BTreeMap::new();
        for (_, p, filters) in &contribs {
            let mut used = false;
            for (name, entry) in filters.iter() {
                let plugin = htnn_plugins::registry::lookup(name).expect("validated");
                let key = htnn_plugins::registry::OrderKey::of(plugin);
                if let std::collections::btree_map::Entry::Vacant(e) = merged.entry(key) {
                    e.insert((plugin, &entry.config));
                    used = true;
                }
            }
            // HTNN lists in `htnn.mosn.io/info` only the policies that contributed a plugin
            // somewhere, not those entirely shadowed by higher-priority ones.
            if used {
                contributors.insert(format!("{}/{}", p.id.namespace, p.id.name));
            }
        }
        // `{"config": ..., "name": ...}`, keys in serde_json's (sorted) order.
        let plugins: Vec<String> = merged
            .values()
            .map(|(plugin, config)| {
                object(
                    [
                        (quoted("config"), config.as_str().to_string()),
                        (quoted("name"), quoted(plugin.name())),
                    ]
                    .into_iter(),
                )
            })
            .collect();
        let mut members = Vec::new();
        // HTNN's per-route chain carries `namespace` (where consumers are looked up) only when
        // a consumer plugin is configured.
        if merged
            .values()
            .any(|(plugin, _)| plugin.is_consumer_plugin())
        {
            members.push((quoted("namespace"), quoted(namespace)));
        }
        members.push((quoted("plugins"), format!("[{}]", plugins.join(","))));
        let chain = object(members.into_iter());
        for route in vs.envoy_route_names(idx) {
            chains.insert(route, chain.clone());
        }
    }
    Merged {
        chains: chains.into_iter().collect(),
        contributors,
    }
}

//! Pure state: what one registry currently publishes ([`RegistryState`], with HTNN's soft
//! delete) and the merge of all registries into one host table ([`HostTable`], with
//! conflict detection). No I/O, no locks: the runner and the tests drive them directly.

use std::collections::{BTreeMap, BTreeSet};

use htnn_proto::istio::networking::v1alpha3::ServiceEntry;

/// host → ServiceEntry of one registry.
pub type Entries = BTreeMap<String, ServiceEntry>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Updated,
    Removed,
    /// Equal to what is stored, or removing what is not there: nothing to publish. Nacos
    /// SDKs fire each subscription callback twice, so this is the common case.
    Unchanged,
}

/// One registry's entries plus which services its last service listing contained.
///
/// Soft delete (HTNN): a service that disappears from the listing keeps its last
/// ServiceEntry, because Nacos v1 pages the listing and a service can be missed, and a
/// registry restarting can briefly list nothing. Only an empty instance list of a
/// subscribed service, a reload or a stop removes an entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistryState {
    entries: Entries,
    listed: BTreeSet<String>,
}

impl RegistryState {
    /// The instances of `host` changed: `Some` is the new entry, `None` an empty (or
    /// entirely unhealthy) instance list.
    pub fn apply(&mut self, host: &str, entry: Option<ServiceEntry>) -> Change {
        match entry {
            None => match self.entries.remove(host) {
                Some(_) => Change::Removed,
                None => Change::Unchanged,
            },
            Some(entry) => match self.entries.get_mut(host) {
                Some(old) if *old == entry => Change::Unchanged,
                Some(old) => {
                    *old = entry;
                    Change::Updated
                }
                None => {
                    self.entries.insert(host.to_string(), entry);
                    Change::Added
                }
            },
        }
    }

    /// Records the hosts of the latest service listing. Never removes an entry; returns the
    /// hosts that just became soft-deleted (to unsubscribe and log).
    pub fn set_listed(&mut self, hosts: impl IntoIterator<Item = String>) -> Vec<String> {
        let listed: BTreeSet<String> = hosts.into_iter().collect();
        let gone = self
            .listed
            .difference(&listed)
            .filter(|h| self.entries.contains_key(*h))
            .cloned()
            .collect();
        self.listed = listed;
        gone
    }

    /// Hosts kept only by the soft delete.
    pub fn soft_deleted(&self) -> impl Iterator<Item = &str> {
        self.entries
            .keys()
            .filter(|h| !self.listed.contains(*h))
            .map(String::as_str)
    }

    /// After a reload (the registry has called [`Self::set_listed`] with the new
    /// config's listing): drops the soft-deleted entries. Returns whether anything went.
    pub fn purge_soft_deleted(&mut self) -> bool {
        let before = self.entries.len();
        let listed = &self.listed;
        self.entries.retain(|h, _| listed.contains(h));
        self.entries.len() != before
    }

    /// On stop: everything goes. Returns whether anything was published.
    pub fn clear(&mut self) -> bool {
        self.listed.clear();
        !std::mem::take(&mut self.entries).is_empty()
    }

    pub fn entries(&self) -> &Entries {
        &self.entries
    }
}

/// A host two registries both produce. The first claimant keeps serving it; the others are
/// reported (ServiceRegistry status, logs) instead of silently replacing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub host: String,
    pub owner: String,
    pub losers: Vec<String>,
}

/// All registries' entries merged: per host, the claims in arrival order; the first wins.
/// Losing claims are kept so the host passes to the next claimant when the owner lets go.
#[derive(Clone, Debug, Default)]
pub struct HostTable {
    claims: BTreeMap<String, Vec<(String, ServiceEntry)>>,
}

impl HostTable {
    /// Replaces `registry`'s claims with `entries` (its whole current set). Returns whether
    /// the served set ([`Self::active`]) changed.
    pub fn set_registry(&mut self, registry: &str, entries: &Entries) -> bool {
        let mut changed = false;
        // Drop claims on hosts the registry no longer has.
        self.claims.retain(|host, claims| {
            if !entries.contains_key(host)
                && let Some(i) = claims.iter().position(|(r, _)| r == registry)
            {
                claims.remove(i);
                changed |= i == 0;
            }
            !claims.is_empty()
        });
        for (host, entry) in entries {
            let claims = self.claims.entry(host.clone()).or_default();
            match claims.iter().position(|(r, _)| r == registry) {
                Some(i) if claims[i].1 == *entry => {}
                Some(i) => {
                    claims[i].1 = entry.clone();
                    changed |= i == 0;
                }
                None => {
                    claims.push((registry.to_string(), entry.clone()));
                    changed |= claims.len() == 1;
                }
            }
        }
        changed
    }

    pub fn remove_registry(&mut self, registry: &str) -> bool {
        self.set_registry(registry, &Entries::new())
    }

    /// The served entries: host → (owning registry, entry), sorted by host.
    pub fn active(&self) -> impl Iterator<Item = (&str, &str, &ServiceEntry)> {
        self.claims
            .iter()
            .filter_map(|(h, c)| c.first().map(|(r, e)| (h.as_str(), r.as_str(), e)))
    }

    pub fn conflicts(&self) -> Vec<Conflict> {
        self.claims
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .map(|(host, c)| Conflict {
                host: host.clone(),
                owner: c[0].0.clone(),
                losers: c[1..].iter().map(|(r, _)| r.clone()).collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn se(host: &str, port: u32) -> ServiceEntry {
        crate::service_entry::build(
            "r",
            &crate::ServiceId::Consul {
                service: host.into(),
                tags: vec![],
                namespace: String::new(),
                datacenter: String::new(),
            },
            &[crate::Instance {
                address: "1.1.1.1".into(),
                port,
                healthy: true,
                enabled: true,
                ..Default::default()
            }],
        )
        .unwrap()
        .entry
        .unwrap()
    }

    fn hosts(s: &RegistryState) -> Vec<&str> {
        s.entries().keys().map(String::as_str).collect()
    }

    #[test]
    fn duplicate_update_is_a_no_op() {
        let mut s = RegistryState::default();
        assert_eq!(s.apply("a", Some(se("a", 80))), Change::Added);
        assert_eq!(s.apply("a", Some(se("a", 80))), Change::Unchanged);
        assert_eq!(s.apply("a", Some(se("a", 81))), Change::Updated);
        assert_eq!(s.apply("a", None), Change::Removed);
        assert_eq!(s.apply("a", None), Change::Unchanged);
    }

    #[test]
    fn soft_delete_keeps_entries_until_reload_or_stop() {
        let mut s = RegistryState::default();
        s.set_listed(["a".to_string(), "b".to_string()]);
        s.apply("a", Some(se("a", 80)));
        s.apply("b", Some(se("b", 80)));
        // b disappears from the listing: kept, reported as soft-deleted.
        assert_eq!(s.set_listed(["a".to_string()]), ["b"]);
        assert_eq!(hosts(&s), ["a", "b"]);
        assert_eq!(s.soft_deleted().collect::<Vec<_>>(), ["b"]);
        // b comes back before a reload: no longer soft-deleted.
        assert!(s.set_listed(["a".to_string(), "b".to_string()]).is_empty());
        assert_eq!(s.soft_deleted().count(), 0);
        s.set_listed(["a".to_string()]);
        assert!(s.purge_soft_deleted());
        assert_eq!(hosts(&s), ["a"]);
        assert!(!s.purge_soft_deleted());
        assert!(s.clear());
        assert!(s.entries().is_empty());
        assert!(!s.clear());
    }

    #[test]
    fn empty_instance_list_removes_even_a_listed_service() {
        let mut s = RegistryState::default();
        s.set_listed(["a".to_string()]);
        s.apply("a", Some(se("a", 80)));
        assert_eq!(s.apply("a", None), Change::Removed);
        assert!(s.entries().is_empty());
    }

    #[test]
    fn first_claimant_keeps_a_host_and_conflicts_are_reported() {
        let mut t = HostTable::default();
        let one = Entries::from([("h".to_string(), se("h", 80))]);
        let two = Entries::from([("h".to_string(), se("h", 90))]);
        assert!(t.set_registry("r1", &one));
        assert!(
            !t.set_registry("r2", &two),
            "a losing claim changes nothing served"
        );
        assert_eq!(
            t.active()
                .map(|(_, r, e)| (r, e.ports[0].number))
                .collect::<Vec<_>>(),
            [("r1", 80)]
        );
        assert_eq!(
            t.conflicts(),
            [Conflict {
                host: "h".into(),
                owner: "r1".into(),
                losers: vec!["r2".into()]
            }]
        );
        // Same content again: no change.
        assert!(!t.set_registry("r1", &one));
        // The owner lets go: the next claimant takes over.
        assert!(t.remove_registry("r1"));
        assert_eq!(t.active().map(|(_, r, _)| r).collect::<Vec<_>>(), ["r2"]);
        assert!(t.conflicts().is_empty());
        assert!(t.remove_registry("r2"));
        assert_eq!(t.active().count(), 0);
    }

    #[test]
    fn loser_updates_do_not_change_the_served_set() {
        let mut t = HostTable::default();
        t.set_registry("r1", &Entries::from([("h".to_string(), se("h", 80))]));
        t.set_registry("r2", &Entries::from([("h".to_string(), se("h", 90))]));
        assert!(!t.set_registry("r2", &Entries::from([("h".to_string(), se("h", 91))])));
        assert!(!t.remove_registry("r2"));
        assert!(t.set_registry("r1", &Entries::from([("h".to_string(), se("h", 81))])));
    }
}

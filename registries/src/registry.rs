//! The registry plugin API: what a registry implements ([`Registry`]) and the handle it
//! publishes through ([`Sink`]).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures::future::BoxFuture;
use htnn_proto::istio::networking::v1alpha3::ServiceEntry;
use tokio::sync::watch;

use crate::state::{Change, Entries, RegistryState};
use crate::{Config, RegistryError};

/// A registry client. Each one is driven by its own task ([`crate::RegistryHandle`]), one
/// call at a time, so an implementation needs no locking of its own, and one that hangs
/// only delays itself.
///
/// `start` does the initial listing and subscriptions and may spawn background tasks
/// (polling, blocking queries, SDK callbacks) that publish through the [`Sink`]; `stop`
/// must end them. Returning an error from `start`/`reload` makes the ServiceRegistry
/// `Invalid` without retry (HTNN's rule); failures after that are retried by the registry
/// itself and reported with [`Sink::degraded`], keeping the last entries published.
pub trait Registry: Send {
    fn start(&mut self, config: Config, sink: Sink) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// A changed config. The registry re-lists its services and calls [`Sink::set_listed`]
    /// with the new listing; on success, soft-deleted entries are dropped.
    fn reload(&mut self, config: Config) -> BoxFuture<'_, Result<(), RegistryError>>;
    /// Ends background work. The entries are withdrawn by the runner, not by the registry.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// Whether a started registry currently reaches its server.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Ok,
    /// The last entries keep being served; `since` is the first failure of the streak.
    Degraded { since: SystemTime, reason: String },
}

/// Where a registry publishes. Cheap to clone into callbacks and background tasks; all
/// methods are synchronous and never block on a consumer, because publication goes
/// through `watch` channels (a slow consumer sees the latest set, never a backlog).
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<SinkState>,
    entries: watch::Sender<Arc<Entries>>,
    health: watch::Sender<Health>,
}

struct SinkState {
    registry: RegistryState,
    /// Set on stop: late callbacks from SDK threads must not resurrect entries.
    closed: bool,
}

impl Sink {
    pub(crate) fn new() -> (Self, watch::Receiver<Arc<Entries>>, watch::Receiver<Health>) {
        let (entries, entries_rx) = watch::channel(Arc::new(Entries::new()));
        let (health, health_rx) = watch::channel(Health::Ok);
        let shared = Arc::new(Shared {
            state: Mutex::new(SinkState {
                registry: RegistryState::default(),
                closed: false,
            }),
            entries,
            health,
        });
        (Self { shared }, entries_rx, health_rx)
    }

    fn with<R>(&self, f: impl FnOnce(&mut RegistryState) -> (R, bool)) -> Option<R> {
        let mut s = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if s.closed {
            return None;
        }
        let (r, changed) = f(&mut s.registry);
        if changed {
            // Published under the lock so two racing callbacks publish in state order.
            self.shared
                .entries
                .send_replace(Arc::new(s.registry.entries().clone()));
        }
        Some(r)
    }

    /// New instances of `host` (`None`: no usable instance left). Identical updates
    /// publish nothing.
    pub fn apply(&self, host: &str, entry: Option<ServiceEntry>) -> Change {
        self.with(|s| {
            let c = s.apply(host, entry);
            (c, c != Change::Unchanged)
        })
        .unwrap_or(Change::Unchanged)
    }

    /// The latest service listing; returns the hosts that became soft-deleted.
    pub fn set_listed(&self, hosts: impl IntoIterator<Item = String>) -> Vec<String> {
        self.with(|s| (s.set_listed(hosts), false))
            .unwrap_or_default()
    }

    pub fn degraded(&self, reason: impl fmt::Display) {
        let reason = reason.to_string();
        self.shared.health.send_modify(|h| match h {
            Health::Degraded { reason: r, .. } => *r = reason,
            Health::Ok => {
                *h = Health::Degraded {
                    since: SystemTime::now(),
                    reason,
                }
            }
        });
    }

    pub fn recovered(&self) {
        self.shared.health.send_if_modified(|h| {
            let was = *h != Health::Ok;
            *h = Health::Ok;
            was
        });
    }

    pub(crate) fn purge_soft_deleted(&self) {
        self.with(|s| ((), s.purge_soft_deleted()));
    }

    pub(crate) fn close(&self) {
        let mut s = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.closed = true;
        if s.registry.clear() {
            self.shared.entries.send_replace(Arc::new(Entries::new()));
        }
        self.shared.health.send_replace(Health::Ok);
    }
}

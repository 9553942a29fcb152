//! The Kubernetes source: watches of the CRDs and of every kind we read, fed into the
//! [`Store`] and from there, batched, into the translation; plus the status writer, driven
//! by the lease.
//!
//! A kind is watched only while its CRD exists, is established and serves the version we
//! read (a watch of a resource that is not served would retry its list forever and never
//! finish the initial sync); otherwise it counts as empty. Watches retry with backoff on their own;
//! their errors are logged and never end the source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::lease::{self, Leadership, LeaseConfig};
use super::status::{self, Write};
use super::store::{Store, WatchedKind, watched_kinds};
use crate::model::ObjectRef;
use crate::source::{Sink, SourceId};
use htnn_translators::Status;

/// Most events applied as one batch: a burst (`kubectl apply` of many objects, a relist) is
/// translated and published once, not once per object.
const MAX_BATCH: usize = 4096;
/// Statuses are checked against the server this often, in case a write was lost.
const RECONCILE_PERIOD: Duration = Duration::from_secs(10);

pub struct Options {
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// Events are applied once none came for this long (at most [`max_delay`] after the
    /// first): `kubectl apply` creates the objects of a file one by one, and a VirtualService
    /// and its policy must reach the translation together, or the route would be served
    /// alone for a moment.
    pub debounce: Duration,
    pub lease: LeaseConfig,
}

// Object events are the common case and carry the object itself; CRDs (rare, large) are boxed.
#[allow(clippy::large_enum_variant)]
enum Input {
    Crd(Box<Event<CustomResourceDefinition>>),
    Kind {
        kind: usize,
        epoch: u64,
        event: Event<DynamicObject>,
    },
}

/// The running watch of one kind. `epoch` tells its events from those of a watch stopped
/// earlier (its CRD deleted and re-created).
struct Running {
    task: JoinHandle<()>,
    epoch: u64,
}

struct Source {
    client: kube::Client,
    namespace: Option<String>,
    store: Store,
    running: Vec<Option<Running>>,
    epoch: u64,
    inputs: mpsc::Sender<Input>,
    /// CRD names during a CRD (re)list.
    crd_listing: Option<BTreeSet<String>>,
    writes: mpsc::UnboundedSender<Write>,
    leading: watch::Receiver<Leadership>,
    sink: Arc<dyn Sink>,
}

/// Runs the Kubernetes source until the process ends.
pub async fn run(
    client: kube::Client,
    opts: Options,
    sink: Arc<dyn Sink>,
    leadership: watch::Sender<Leadership>,
) {
    let kinds = watched_kinds();
    let (inputs, mut rx) = mpsc::channel(1024);
    let (writes, writes_rx) = mpsc::unbounded_channel();
    let (failed_tx, mut failed) = mpsc::unbounded_channel();
    tokio::spawn(status::writer(client.clone(), writes_rx, failed_tx));
    tokio::spawn(lease::run(client.clone(), opts.lease, leadership.clone()));
    let mut statuses = sink.subscribe_statuses();
    let mut source = Source {
        client: client.clone(),
        namespace: opts.namespace,
        running: kinds.iter().map(|_| None).collect(),
        store: Store::new(kinds),
        epoch: 0,
        inputs: inputs.clone(),
        crd_listing: None,
        writes,
        leading: leadership.subscribe(),
        sink,
    };
    // Whole CRDs, not only their metadata: whether a kind can be watched depends on the
    // versions it serves and on it being established.
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd_inputs = inputs;
    tokio::spawn(async move {
        let mut stream =
            std::pin::pin!(watcher::watcher(crds, watcher::Config::default()).default_backoff());
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    if crd_inputs.send(Input::Crd(Box::new(e))).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "watch of CustomResourceDefinitions failed; retrying"),
            }
        }
    });
    info!(namespace = ?source.namespace, "watching Kubernetes");
    let mut reconcile = tokio::time::interval(RECONCILE_PERIOD);
    let mut leading_rx = source.leading.clone();
    loop {
        tokio::select! {
            Some(first) = rx.recv() => {
                let batch = collect(first, &mut rx, opts.debounce).await;
                source.apply(batch);
            }
            Some(changed) = statuses.recv() => {
                for (id, s) in changed {
                    source.reconcile(&id, s.as_ref());
                }
            }
            Some(id) = failed.recv() => source.store.set_condition(&id, None),
            Ok(()) = leading_rx.changed() => {
                if leading_rx.borrow_and_update().leading {
                    source.reconcile_all();
                }
            }
            _ = reconcile.tick() => source.reconcile_all(),
        }
    }
}

impl Source {
    fn apply(&mut self, batch: Vec<Input>) {
        let mut changes = Vec::new();
        let mut touched_htnn = Vec::new();
        let was_synced = self.store.synced();
        for input in batch {
            match input {
                Input::Crd(event) => self.crd_event(*event, &mut changes),
                Input::Kind { kind, epoch, event } => {
                    if self.running[kind].as_ref().map(|r| r.epoch) != Some(epoch) {
                        continue;
                    }
                    let k = &self.store.kinds()[kind];
                    let (name, htnn) = (k.kind, k.is_htnn());
                    match event {
                        Event::Init => self.store.init(kind),
                        Event::InitDone => {
                            self.store.init_done(kind, &mut changes);
                            debug!(kind = name, "initial list done");
                        }
                        Event::InitApply(o) | Event::Apply(o) => {
                            let json = to_json(&self.store.kinds()[kind], o);
                            if htnn && let Some(id) = self.store.id_of(kind, &json) {
                                touched_htnn.push(id);
                            }
                            self.store.apply(kind, json, &mut changes);
                        }
                        Event::Delete(o) => {
                            let json = to_json(&self.store.kinds()[kind], o);
                            self.store.delete(kind, &json, &mut changes);
                        }
                    }
                }
            }
        }
        let synced = self.store.synced();
        if synced && !was_synced {
            info!(
                objects = self.store.object_count(),
                "Kubernetes initial sync complete"
            );
        }
        self.sink
            .publish(SourceId::Kubernetes, changes, self.store.errors(), synced);
        // Statuses translated before the sync completed were not written (a target may not
        // have been listed yet): check them all once now.
        if synced && !was_synced {
            self.reconcile_all();
            return;
        }
        // Objects that do not load have no status from the translation: their Invalid
        // condition comes from here.
        for id in touched_htnn {
            if self
                .store
                .htnn_object(&id)
                .is_some_and(|o| o.load_error.is_some())
            {
                self.reconcile(&id, None);
            }
        }
    }

    fn crd_event(
        &mut self,
        event: Event<CustomResourceDefinition>,
        changes: &mut Vec<htnn_translators::Change>,
    ) {
        match event {
            Event::Init => self.crd_listing = Some(BTreeSet::new()),
            Event::InitApply(crd) => {
                if let Some(kind) = self.servable(&crd)
                    && let Some(l) = &mut self.crd_listing
                {
                    l.insert(self.store.kinds()[kind].crd_name());
                }
            }
            Event::InitDone => {
                let present = self.crd_listing.take().unwrap_or_default();
                for kind in 0..self.running.len() {
                    if present.contains(&self.store.kinds()[kind].crd_name()) {
                        self.start(kind);
                    } else {
                        self.stop(kind, changes);
                    }
                }
                self.store.crds_listed(&present, changes);
            }
            Event::Apply(crd) => {
                let name = crd.metadata.name.clone().unwrap_or_default();
                match (self.kind_of_crd(&name), self.servable(&crd)) {
                    (_, Some(kind)) => self.start(kind),
                    // No longer (or not yet) serving the version we read.
                    (Some(kind), None) => self.stop(kind, changes),
                    (None, None) => {}
                }
            }
            Event::Delete(crd) => {
                let name = crd.metadata.name.clone().unwrap_or_default();
                if let Some(kind) = self.kind_of_crd(&name) {
                    info!(crd = %name, "CRD deleted; its objects are no longer served");
                    self.stop(kind, changes);
                }
            }
        }
    }

    /// The kind a CRD defines, if it is one we read and the CRD serves the version we watch
    /// and is established (its objects can be listed). A CRD that is established but lacks
    /// the version is reported: its objects cannot be served.
    fn servable(&self, crd: &CustomResourceDefinition) -> Option<usize> {
        let name = crd.metadata.name.as_deref()?;
        let kind = self.kind_of_crd(name)?;
        let version = self.store.kinds()[kind].version;
        let established = crd.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        let served = crd
            .spec
            .versions
            .iter()
            .any(|v| v.name == version && v.served);
        match (established, served) {
            (true, true) => Some(kind),
            (true, false) => {
                warn!(crd = %name, version, "the CRD does not serve the version istiod reads; its objects are not served");
                None
            }
            (false, _) => {
                debug!(crd = %name, "CRD not established yet");
                None
            }
        }
    }

    fn kind_of_crd(&self, crd: &str) -> Option<usize> {
        self.store.kinds().iter().position(|k| k.crd_name() == crd)
    }

    /// Starts watching a kind (if not already).
    fn start(&mut self, kind: usize) {
        if self.running[kind].is_some() {
            return;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        self.store.set_present(kind);
        let k = self.store.kinds()[kind].clone();
        info!(kind = k.kind, api_version = %k.api_version(), "watching");
        let gvk = GroupVersionKind::gvk(k.group, k.version, k.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, &k.plural);
        let api: Api<DynamicObject> = match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let inputs = self.inputs.clone();
        let task = tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        if inputs
                            .send(Input::Kind { kind, epoch, event })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    // Right after its CRD appears, a kind is not served for a moment.
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                        if s.code == 404 =>
                    {
                        debug!(kind = k.kind, "not served yet; retrying")
                    }
                    Err(e) => warn!(kind = k.kind, error = %e, "watch failed; retrying"),
                }
            }
        });
        self.running[kind] = Some(Running { task, epoch });
    }

    /// Stops watching a kind whose CRD is gone; its objects are removed.
    fn stop(&mut self, kind: usize, changes: &mut Vec<htnn_translators::Change>) {
        if let Some(r) = self.running[kind].take() {
            r.task.abort();
        }
        self.store.set_absent(kind, changes);
    }

    fn leading(&self) -> bool {
        self.leading.borrow().leading
    }

    /// Writes the object's condition if it differs from the server's (leader only).
    fn reconcile(&mut self, id: &ObjectRef, translated: Option<&Status>) {
        // Before every kind is listed, a policy's target may just not be listed yet.
        if !self.leading() || !self.store.synced() {
            return;
        }
        let Some(o) = self.store.htnn_object(id) else {
            return;
        };
        let status = match (o.load_error, translated) {
            (Some(e), _) => Status::invalid(o.generation, e),
            (None, Some(s)) => s.clone(),
            (None, None) => return,
        };
        let want = status::desired(&status, o.condition, &status::now_rfc3339());
        if o.condition.is_some_and(|c| status::same(c, &want)) {
            return;
        }
        let kind = self.store.kinds()[o.kind].clone();
        self.store.set_condition(id, Some(want.clone()));
        let _ = self.writes.send(Write {
            id: id.clone(),
            kind,
            condition: want,
        });
    }

    fn reconcile_all(&mut self) {
        if !self.leading() || !self.store.synced() {
            return;
        }
        let statuses: BTreeMap<ObjectRef, Status> = self.sink.statuses();
        let ids: Vec<ObjectRef> = self.store.htnn_objects().map(|o| o.id.clone()).collect();
        for id in ids {
            self.reconcile(&id, statuses.get(&id));
        }
    }
}

/// The longest a change waits for the events that follow it.
fn max_delay(debounce: Duration) -> Duration {
    (debounce * 10).max(Duration::from_secs(1))
}

/// `first` and the events that follow it closely (see [`Options::debounce`]).
async fn collect(first: Input, rx: &mut mpsc::Receiver<Input>, debounce: Duration) -> Vec<Input> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + max_delay(debounce);
    while batch.len() < MAX_BATCH {
        if let Ok(i) = rx.try_recv() {
            batch.push(i);
            continue;
        }
        let quiet = (tokio::time::Instant::now() + debounce).min(deadline);
        match tokio::time::timeout_at(quiet, rx.recv()).await {
            Ok(Some(i)) => batch.push(i),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

/// A watched object as the JSON document the loader reads. List items may lack their
/// apiVersion and kind; they are those of the watch.
fn to_json(kind: &WatchedKind, o: DynamicObject) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| kind.api_version().into());
        m.entry("kind").or_insert_with(|| kind.kind.into());
    }
    v
}

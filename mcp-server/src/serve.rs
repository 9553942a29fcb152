//! `htnn serve`: wires the sources (directory, Kubernetes), snapshot publication, the MCP/ADS
//! server, the admission webhook and the admin server together.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::Watcher;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::cli::ServeArgs;
use crate::k8s;
use crate::k8s::lease::Leadership;
use crate::metrics::{Metrics, SourceLabel};
use crate::model::{Object, ObjectRef};
use crate::publish;
use crate::snapshot::Snapshot;
use crate::source::dir::{DirSource, Reload};
use crate::source::{LoadError, Sink, SourceId, StatusChanges};
use crate::xds;
use htnn_translators::{Change, Status, Translator};

pub type SnapshotTx = watch::Sender<Option<Arc<Snapshot>>>;

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::cli::init_logging(&args.log)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config_dir,
        kube,
        xds_addr,
        admin_addr,
        debounce,
        resync_period,
        root_namespace,
        push_settle,
        ack_timeout,
        log: _,
    } = args;
    let timing = xds::PushTiming {
        settle: push_settle,
        ack_timeout,
    };
    let opts = htnn_translators::Options {
        root_namespace,
        keep_last_valid: true,
    };
    if let Some(dir) = &config_dir
        && !dir.is_dir()
    {
        anyhow::bail!("--config-dir {}: not a directory", dir.display());
    }
    if config_dir.is_none() && !kube.enabled() {
        anyhow::bail!("nothing to serve: give --config-dir, --kubernetes, or both");
    }
    let mut sources = BTreeSet::new();
    if config_dir.is_some() {
        sources.insert(SourceId::Dir);
    }
    if kube.enabled() {
        sources.insert(SourceId::Kubernetes);
    }
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let webhook = match (kube.webhook_addr, &kube.tls_cert, &kube.tls_key) {
        (Some(addr), Some(cert), Some(key)) => Some(
            k8s::webhook::WebhookServer::bind(addr, cert, key)
                .await
                .with_context(|| format!("--webhook-addr {addr}"))?,
        ),
        _ => None,
    };
    if let Some(w) = &webhook {
        registry.register(
            "htnn_webhook_denials",
            "Admission requests the webhook denied",
            w.denials(),
        );
    }

    let (tx, rx) = watch::channel(None);
    let connections = xds::server::Connections::default();
    let pipeline = Arc::new(Mutex::new(Pipeline::new(opts, sources)));
    let (leadership_tx, leadership) = watch::channel(None::<Leadership>);
    let admin_state = Arc::new(AdminState {
        ready: false.into(),
        registry,
        snapshot_view: {
            let p = pipeline.clone();
            Box::new(move || lock(&p).snapshot_view())
        },
        status_view: {
            let p = pipeline.clone();
            Box::new(move || {
                serde_json::json!({
                    "statusWriter": *leadership.borrow(),
                    "objects": status_json(&lock(&p).translator.output().statuses),
                })
            })
        },
        connections_view: {
            let c = connections.clone();
            Box::new(move || c.to_json())
        },
    });

    let xds_listener = tokio::net::TcpListener::bind(xds_addr)
        .await
        .with_context(|| format!("binding --xds-addr {xds_addr}"))?;
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {admin_addr}"))?;
    info!(xds = %xds_addr, admin = %admin_addr, dir = ?config_dir, kubernetes = kube.enabled(),
        "htnn serve starting");

    let publisher = Arc::new(Publisher {
        tx,
        admin: admin_state.clone(),
        metrics: metrics.clone(),
        pipeline,
    });
    if let Some(dir) = config_dir {
        // The directory source runs on its own thread: file I/O and parsing are blocking and
        // bursty.
        let source = DirSource::new(&dir);
        let publisher = publisher.clone();
        std::thread::Builder::new()
            .name("htnn-dir-source".into())
            .spawn(move || watch_dir(source, &publisher, debounce, resync_period))?;
    }
    let mut lease = None;
    if kube.enabled() {
        let client = k8s::client(&kube).await?;
        let cfg = k8s::lease_config(&kube);
        let (tx, mut rx) = watch::channel(Leadership {
            identity: cfg.identity.clone(),
            lease: format!("{}/{}", cfg.namespace, cfg.name),
            ..Leadership::default()
        });
        // Mirror the election into the admin view.
        tokio::spawn(async move {
            loop {
                let _ = leadership_tx.send(Some(rx.borrow_and_update().clone()));
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        let options = k8s::watch::Options {
            namespace: kube.namespace.clone(),
            debounce,
            lease: cfg.clone(),
        };
        tokio::spawn(k8s::watch::run(
            client.clone(),
            options,
            publisher.clone(),
            tx,
        ));
        lease = Some((client, cfg));
    }
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        info!("shutting down");
        if let Some((client, cfg)) = &lease {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                k8s::lease::release(client.clone(), cfg),
            )
            .await;
        }
    };
    let admin = axum::serve(admin_listener, admin::router(admin_state));
    let webhook = async move {
        match webhook {
            Some(w) => {
                w.run(std::future::pending()).await;
                Ok::<(), anyhow::Error>(())
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = xds::server::serve_with_shutdown(xds_listener, rx, metrics, connections, timing, shutdown) => r.context("MCP/ADS server")?,
        r = admin => r.context("admin server")?,
        r = webhook => r.context("admission webhook")?,
    }
    Ok(())
}

/// What is served, from the sources' objects: the incremental translator and the encoder.
/// Shared with the admin server, which renders its debug views from it on demand.
struct Pipeline {
    translator: Translator,
    encoder: publish::Encoder,
    /// Current load errors of each source.
    errors: BTreeMap<SourceId, BTreeSet<LoadError>>,
    /// HTNN objects whose status is not `Accepted`.
    rejected: BTreeSet<ObjectRef>,
    /// Sources that have not finished their initial load.
    pending: BTreeSet<SourceId>,
    /// With several sources: which defines what.
    merged: Option<Merged>,
    status_subscribers: Vec<mpsc::UnboundedSender<StatusChanges>>,
}

impl Pipeline {
    fn new(opts: htnn_translators::Options, sources: BTreeSet<SourceId>) -> Self {
        Self {
            translator: Translator::new(opts),
            encoder: publish::Encoder::default(),
            errors: BTreeMap::new(),
            rejected: BTreeSet::new(),
            merged: (sources.len() > 1).then(Merged::default),
            pending: sources,
            status_subscribers: Vec::new(),
        }
    }

    /// Applies source changes and logs every status that changed.
    fn translate(&mut self, changes: Vec<htnn_translators::Change>) -> htnn_translators::Delta {
        self.translator.apply(changes);
        let delta = self.translator.take_delta();
        let statuses = &self.translator.output().statuses;
        let mut changed = Vec::with_capacity(delta.statuses.len());
        for id in &delta.statuses {
            let status = statuses.get(id);
            match status {
                Some(status) if status.is_accepted() => {
                    self.rejected.remove(id);
                    info!(object = %id, message = %status.message, "accepted");
                }
                Some(status) => {
                    self.rejected.insert(id.clone());
                    warn!(object = %id, reason = ?status.reason, message = %status.message, "not accepted");
                }
                None => {
                    self.rejected.remove(id);
                }
            }
            changed.push((id.clone(), status.cloned()));
        }
        if !changed.is_empty() {
            self.status_subscribers
                .retain(|s| s.send(changed.clone()).is_ok());
        }
        delta
    }

    fn error_count(&self) -> usize {
        self.errors.values().map(BTreeSet::len).sum()
    }

    fn snapshot_view(&self) -> serde_json::Value {
        let mut view =
            publish::debug_view(self.encoder.snapshot(), &self.translator.output().objects);
        let errors: Vec<&LoadError> = self.errors.values().flatten().collect();
        view["errors"] = serde_json::to_value(errors).unwrap_or_default();
        view
    }
}

/// Objects by source, when there are two: the Kubernetes copy of an object wins over the
/// file's.
#[derive(Default)]
struct Merged {
    objects: BTreeMap<ObjectRef, [Option<Arc<Object>>; 2]>,
}

impl Merged {
    fn slot(source: SourceId) -> usize {
        match source {
            SourceId::Dir => 0,
            SourceId::Kubernetes => 1,
        }
    }

    /// One source's changes, as changes of what is served.
    fn apply(&mut self, source: SourceId, changes: Vec<Change>) -> Vec<Change> {
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let (id, value) = match change {
                Change::Upsert(o) => (o.id.clone(), Some(o)),
                Change::Delete(id) => (id, None),
            };
            let slots = self.objects.entry(id.clone()).or_default();
            let before = slots[1].clone().or_else(|| slots[0].clone());
            slots[Self::slot(source)] = value;
            if slots[0].is_some() && slots[1].is_some() {
                warn!(object = %id, "defined in both Kubernetes and --config-dir; the Kubernetes one is served");
            }
            let after = slots[1].clone().or_else(|| slots[0].clone());
            if slots.iter().all(Option::is_none) {
                self.objects.remove(&id);
            }
            match (before, after) {
                (Some(b), Some(a)) if b == a => {}
                (_, Some(a)) => out.push(Change::Upsert(a)),
                (Some(_), None) => out.push(Change::Delete(id)),
                (None, None) => {}
            }
        }
        out
    }
}

fn lock(p: &Mutex<Pipeline>) -> MutexGuard<'_, Pipeline> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns each source's changes into a published snapshot, and reports what changed.
struct Publisher {
    tx: SnapshotTx,
    admin: Arc<AdminState>,
    metrics: Arc<Metrics>,
    pipeline: Arc<Mutex<Pipeline>>,
}

/// Whether a file event can mean new content. notify also reports opens and reads (the
/// source's own, on every reload); of the access events only "closed after writing" counts.
fn may_change_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Loads the directory, publishes, then reloads on every (debounced) change. Returns when
/// the publication channel closes.
fn watch_dir(source: DirSource, publisher: &Publisher, debounce: Duration, resync: Duration) {
    let mut source = source;
    let (events_tx, events) = std::sync::mpsc::channel();
    let _watcher = match notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        // An error may mean lost events: rescan. Our own reads must not trigger one, or the
        // source would reload forever.
        if e.as_ref().map_or(true, |e| may_change_content(&e.kind)) {
            let _ = events_tx.send(());
        }
    }) {
        Ok(mut w) => match w.watch(source.dir(), notify::RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the config directory; relying on the periodic rescan");
                None
            }
        },
        Err(e) => {
            warn!(error = %e, "no file watcher; relying on the periodic rescan");
            None
        }
    };
    loop {
        match source.reload() {
            Ok(Reload { changes, errors }) => {
                publisher.publish(SourceId::Dir, changes, errors, true)
            }
            Err(e) => {
                error!(dir = %source.dir().display(), error = %e, "cannot list the config directory; keeping the last state");
                publisher
                    .metrics
                    .load_errors
                    .get_or_create(&SourceLabel {
                        source: "dir".into(),
                    })
                    .inc();
            }
        }
        if publisher.tx.is_closed() {
            return;
        }
        match events.recv_timeout(resync) {
            Ok(_) => while events.recv_timeout(debounce).is_ok() {},
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(resync),
        }
    }
}

impl Sink for Publisher {
    fn publish(
        &self,
        source: SourceId,
        changes: Vec<Change>,
        errors: Vec<LoadError>,
        synced: bool,
    ) {
        let Publisher {
            tx,
            admin,
            metrics,
            pipeline,
        } = self;
        let started = Instant::now();
        let mut guard = lock(pipeline);
        let p = &mut *guard;
        // Log each error once, when it appears, not on every reload.
        let current: BTreeSet<LoadError> = errors.into_iter().collect();
        let previous = p.errors.remove(&source).unwrap_or_default();
        for e in current.difference(&previous) {
            error!(source = source.label(), file = %e.file, document = ?e.document, object = ?e.object, reason = %e.reason,
                "invalid config; the object's last good state (if any) keeps serving");
            metrics
                .load_errors
                .get_or_create(&SourceLabel {
                    source: source.label().into(),
                })
                .inc();
        }
        for e in previous.difference(&current) {
            info!(source = source.label(), file = %e.file, object = ?e.object, "config error resolved");
        }
        p.errors.insert(source, current);
        if synced {
            p.pending.remove(&source);
        }
        let changes = match &mut p.merged {
            Some(m) => m.apply(source, changes),
            None => changes,
        };

        // Nothing is served before every source finished its initial load; until then the
        // translation and the encoder are kept up to date, unpublished.
        let ready = p.pending.is_empty();
        let first = tx.borrow().is_none();
        let count = changes.len();
        let delta = (count > 0).then(|| p.translate(changes));
        metrics
            .invalid_objects
            .set((p.error_count() + p.rejected.len()) as i64);

        let objects = &p.translator.output().objects;
        let changed = delta
            .as_ref()
            .is_some_and(|d| p.encoder.update(objects, &d.objects));
        if ready && (changed || first) {
            let snapshot = Arc::new(p.encoder.snapshot().clone());
            let version = snapshot.version();
            metrics.set_snapshot_version(&version);
            tx.send_replace(Some(snapshot));
            metrics
                .translate_seconds
                .observe(started.elapsed().as_secs_f64());
            info!(source = source.label(), version = %version, changes = count,
                changed_objects = delta.as_ref().map_or(0, |d| d.objects.len()),
                objects = objects.len(), errors = p.error_count(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "publishing snapshot");
        }
        drop(guard);
        if ready && !admin.ready.swap(true, Ordering::AcqRel) {
            info!("initial load complete; serving");
        }
    }

    fn statuses(&self) -> BTreeMap<ObjectRef, Status> {
        lock(&self.pipeline).translator.output().statuses.clone()
    }

    fn subscribe_statuses(&self) -> mpsc::UnboundedReceiver<StatusChanges> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.pipeline).status_subscribers.push(tx);
        rx
    }
}

fn status_json(statuses: &std::collections::BTreeMap<ObjectRef, Status>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (id, s) in statuses {
        out.insert(id.to_string(), serde_json::to_value(s).unwrap_or_default());
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::{Change, Merged, SourceId, may_change_content};
    use htnn_translators::parse::parse_file;
    use std::sync::Arc;

    fn gateway(selector: &str) -> Arc<crate::model::Object> {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec: {{selector: {{istio: {selector}}}}}\n"
        );
        Arc::new(parse_file(&text, false).remove(0).unwrap())
    }

    fn served(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Upsert(o) => format!("upsert {}", o.spec_json()["selector"]["istio"]),
                Change::Delete(id) => format!("delete {id}"),
            })
            .collect()
    }

    #[test]
    fn kubernetes_wins_over_the_directory_and_the_file_comes_back() {
        let mut m = Merged::default();
        let (file, kube) = (gateway("from-file"), gateway("from-kube"));
        let id = file.id.clone();
        assert_eq!(
            served(&m.apply(SourceId::Dir, vec![Change::Upsert(file.clone())])),
            ["upsert \"from-file\""]
        );
        assert_eq!(
            served(&m.apply(SourceId::Kubernetes, vec![Change::Upsert(kube)])),
            ["upsert \"from-kube\""]
        );
        // The file changes while shadowed: nothing to serve.
        assert!(
            m.apply(SourceId::Dir, vec![Change::Upsert(gateway("edited"))])
                .is_empty()
        );
        // Kubernetes deletes it: the file's copy is served again.
        assert_eq!(
            served(&m.apply(SourceId::Kubernetes, vec![Change::Delete(id.clone())])),
            ["upsert \"edited\""]
        );
        assert_eq!(
            served(&m.apply(SourceId::Dir, vec![Change::Delete(id)])),
            ["delete Gateway default/gw"]
        );
        assert!(m.objects.is_empty());
    }
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind,
        RenameMode,
    };

    #[test]
    fn reads_do_not_trigger_a_reload_writes_do() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
        ] {
            assert!(!may_change_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Content)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(may_change_content(&kind), "{kind:?}");
        }
    }
}

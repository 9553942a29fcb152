//! `htnn serve`: wires the directory source, snapshot publication, the MCP/ADS server and the
//! admin server together.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::Watcher;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::cli::ServeArgs;
use crate::metrics::{Metrics, SourceLabel};
use crate::model::ObjectRef;
use crate::publish;
use crate::snapshot::Snapshot;
use crate::source::LoadError;
use crate::source::dir::{DirSource, Reload};
use crate::xds;
use htnn_translators::{Status, Translator};

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
        kube: _kube,
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
    let config_dir = config_dir.context("--config-dir is required")?;
    if !config_dir.is_dir() {
        anyhow::bail!("--config-dir {}: not a directory", config_dir.display());
    }
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let (tx, rx) = watch::channel(None);
    let connections = xds::server::Connections::default();
    let pipeline = Arc::new(Mutex::new(Pipeline::new(opts)));
    let admin_state = Arc::new(AdminState {
        ready: false.into(),
        registry,
        snapshot_view: {
            let p = pipeline.clone();
            Box::new(move || lock(&p).snapshot_view())
        },
        status_view: {
            let p = pipeline.clone();
            Box::new(move || status_json(&lock(&p).translator.output().statuses))
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
    info!(xds = %xds_addr, admin = %admin_addr, dir = %config_dir.display(), "htnn serve starting");

    // The source runs on its own thread: file I/O and parsing are blocking and bursty.
    let source = DirSource::new(&config_dir);
    let mut publisher = Publisher {
        tx,
        admin: admin_state.clone(),
        metrics: metrics.clone(),
        pipeline,
    };
    std::thread::Builder::new()
        .name("htnn-dir-source".into())
        .spawn(move || watch_dir(source, &mut publisher, debounce, resync_period))?;

    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        info!("shutting down");
    };
    let admin = axum::serve(admin_listener, admin::router(admin_state));
    tokio::select! {
        r = xds::server::serve_with_shutdown(xds_listener, rx, metrics, connections, timing, shutdown) => r.context("MCP/ADS server")?,
        r = admin => r.context("admin server")?,
    }
    Ok(())
}

/// What is served, from the sources' objects: the incremental translator and the encoder.
/// Shared with the admin server, which renders its debug views from it on demand.
struct Pipeline {
    translator: Translator,
    encoder: publish::Encoder,
    /// Current load errors of the sources.
    errors: BTreeSet<LoadError>,
    /// HTNN objects whose status is not `Accepted`.
    rejected: BTreeSet<ObjectRef>,
}

impl Pipeline {
    fn new(opts: htnn_translators::Options) -> Self {
        Self {
            translator: Translator::new(opts),
            encoder: publish::Encoder::default(),
            errors: BTreeSet::new(),
            rejected: BTreeSet::new(),
        }
    }

    /// Applies source changes and logs every status that changed.
    fn translate(&mut self, changes: Vec<htnn_translators::Change>) -> htnn_translators::Delta {
        self.translator.apply(changes);
        let delta = self.translator.take_delta();
        let statuses = &self.translator.output().statuses;
        for id in &delta.statuses {
            match statuses.get(id) {
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
        }
        delta
    }

    fn snapshot_view(&self) -> serde_json::Value {
        let mut view =
            publish::debug_view(self.encoder.snapshot(), &self.translator.output().objects);
        view["errors"] = serde_json::to_value(&self.errors).unwrap_or_default();
        view
    }
}

fn lock(p: &Mutex<Pipeline>) -> MutexGuard<'_, Pipeline> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns each reload into a published snapshot, and reports what changed.
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
fn watch_dir(
    mut source: DirSource,
    publisher: &mut Publisher,
    debounce: Duration,
    resync: Duration,
) {
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
            Ok(reload) => publisher.publish(reload),
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

impl Publisher {
    fn publish(&mut self, reload: Reload) {
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
        let current: BTreeSet<LoadError> = reload.errors.into_iter().collect();
        for e in current.difference(&p.errors) {
            error!(file = %e.file, document = ?e.document, object = ?e.object, reason = %e.reason,
                "invalid config; the object's last good state (if any) keeps serving");
            metrics
                .load_errors
                .get_or_create(&SourceLabel {
                    source: "dir".into(),
                })
                .inc();
        }
        for e in p.errors.difference(&current) {
            info!(file = %e.file, object = ?e.object, "config error resolved");
        }
        p.errors = current;

        // A reload that changed no object (at most the errors) translates nothing.
        let first = tx.borrow().is_none();
        let changes = reload.changes.len();
        let delta = (changes > 0 || first).then(|| p.translate(reload.changes));
        metrics
            .invalid_objects
            .set((p.errors.len() + p.rejected.len()) as i64);

        let objects = &p.translator.output().objects;
        if let Some(delta) = delta
            && (p.encoder.update(objects, &delta.objects) || first)
        {
            let snapshot = Arc::new(p.encoder.snapshot().clone());
            let version = snapshot.version();
            metrics.set_snapshot_version(&version);
            tx.send_replace(Some(snapshot));
            metrics
                .translate_seconds
                .observe(started.elapsed().as_secs_f64());
            info!(version = %version, changes, changed_objects = delta.objects.len(),
                objects = objects.len(), errors = p.errors.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "publishing snapshot");
        }
        drop(guard);
        if !admin.ready.swap(true, Ordering::AcqRel) {
            info!("initial load complete; serving");
        }
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
    use super::may_change_content;
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

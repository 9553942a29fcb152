//! `htnn serve`: wires the directory source, snapshot publication, the MCP/ADS server and the
//! admin server together.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use notify::Watcher;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::cli::ServeArgs;
use crate::metrics::{Metrics, SourceLabel};
use crate::model::{Object, ObjectRef};
use crate::publish;
use crate::snapshot::Snapshot;
use crate::source::LoadError;
use crate::source::dir::{DirSource, DirView};
use crate::xds;
use htnn_translators::{Reason, Status};

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
    let opts = htnn_translators::Options { root_namespace };
    if !config_dir.is_dir() {
        anyhow::bail!("--config-dir {}: not a directory", config_dir.display());
    }
    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    let (tx, rx) = watch::channel(None);
    let connections = xds::server::Connections::default();
    let admin_state = Arc::new(AdminState {
        ready: false.into(),
        registry,
        snapshot_view: RwLock::new(serde_json::json!({"ready": false})),
        status_view: RwLock::new(serde_json::json!({})),
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
        opts,
        errors: BTreeSet::new(),
        statuses: BTreeMap::new(),
        last_valid: BTreeMap::new(),
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

/// Turns each reload into a published snapshot, and reports what changed.
struct Publisher {
    tx: SnapshotTx,
    admin: Arc<AdminState>,
    metrics: Arc<Metrics>,
    opts: htnn_translators::Options,
    errors: BTreeSet<LoadError>,
    statuses: BTreeMap<ObjectRef, Status>,
    /// The last version of each HTNN object that was not `Invalid`.
    last_valid: BTreeMap<ObjectRef, Object>,
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
        let _ = events_tx.send(e.is_ok());
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
            Ok(view) => publisher.publish(view),
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
    fn publish(&mut self, view: DirView) {
        let Publisher {
            tx,
            admin,
            metrics,
            opts,
            errors,
            statuses,
            last_valid,
        } = self;
        // Log each error once, when it appears, not on every reload.
        let current: BTreeSet<LoadError> = view.errors.iter().cloned().collect();
        for e in current.difference(errors) {
            error!(file = %e.file, document = ?e.document, object = ?e.object, reason = %e.reason,
                "invalid config; the object's last good state (if any) keeps serving");
            metrics
                .load_errors
                .get_or_create(&SourceLabel {
                    source: "dir".into(),
                })
                .inc();
        }
        for e in errors.difference(&current) {
            info!(file = %e.file, object = ?e.object, "config error resolved");
        }
        *errors = current;

        let output = translate_keeping_last_valid(&view.objects, opts, last_valid);
        for (id, status) in &output.statuses {
            if statuses.get(id) != Some(status) {
                if status.is_accepted() {
                    info!(object = %id, "accepted");
                } else {
                    warn!(object = %id, reason = ?status.reason, message = %status.message, "not accepted");
                }
            }
        }
        *statuses = output.statuses.clone();
        let rejected = statuses.values().filter(|s| !s.is_accepted()).count();
        metrics
            .invalid_objects
            .set((errors.len() + rejected) as i64);
        admin.set_status_view(status_json(statuses));

        let snapshot = publish::build(&output.objects);
        let mut debug = if tx.borrow().as_deref() != Some(&snapshot) {
            let version = snapshot.version();
            let debug = publish::debug_view(&snapshot, &output.objects);
            metrics.set_snapshot_version(&version);
            info!(version = %version, objects = output.objects.len(), errors = view.errors.len(), "publishing snapshot");
            tx.send_replace(Some(Arc::new(snapshot)));
            debug
        } else {
            admin
                .snapshot_view
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        debug["errors"] = serde_json::to_value(&view.errors).unwrap_or_default();
        admin.set_snapshot_view(debug);
        if !admin.ready.swap(true, Ordering::AcqRel) {
            info!("initial load complete; serving");
        }
    }
}

fn status_json(statuses: &BTreeMap<ObjectRef, Status>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (id, s) in statuses {
        out.insert(id.to_string(), serde_json::to_value(s).unwrap_or_default());
    }
    serde_json::Value::Object(out)
}

/// Translates, but an HTNN object that became `Invalid` keeps serving its last valid version
/// (reported as Invalid all the same): a typo in a policy must not silently drop the
/// protection it gave. This is what HTNN users get from its validating webhook, which rejects
/// the bad update and leaves the previous object in place.
fn translate_keeping_last_valid(
    objects: &BTreeMap<ObjectRef, Object>,
    opts: &htnn_translators::Options,
    last_valid: &mut BTreeMap<ObjectRef, Object>,
) -> htnn_translators::Output {
    let mut output = htnn_translators::translate(objects, opts);
    let fallbacks: Vec<(ObjectRef, Status)> = output
        .statuses
        .iter()
        .filter(|(id, s)| s.reason == Reason::Invalid && objects.get(*id) != last_valid.get(*id))
        .filter(|(id, _)| last_valid.contains_key(*id))
        .map(|(id, s)| (id.clone(), s.clone()))
        .collect();
    if !fallbacks.is_empty() {
        let mut input = objects.clone();
        for (id, _) in &fallbacks {
            input.insert(id.clone(), last_valid[id].clone());
        }
        output = htnn_translators::translate(&input, opts);
        for (id, mut status) in fallbacks {
            status
                .message
                .push_str(" (the last valid version keeps serving)");
            output.statuses.insert(id, status);
        }
    }
    last_valid.retain(|id, _| objects.contains_key(id));
    for (id, status) in &output.statuses {
        if status.reason != Reason::Invalid
            && let Some(obj) = objects.get(id)
        {
            last_valid.insert(id.clone(), obj.clone());
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use htnn_translators::parse::parse_file;

    const BASE: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec: {gateways: [istio-system/gw], hosts: [a], http: [{name: r, route: [{destination: {host: a}}]}]}
---
apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {name: p}
spec:
  targetRef: {group: networking.istio.io, kind: VirtualService, name: vs}
  filters: {limitReq: {config: {average: AVERAGE}}}
";

    fn objects(average: &str) -> BTreeMap<ObjectRef, Object> {
        parse_file(&BASE.replace("AVERAGE", average), false)
            .into_iter()
            .map(|o| o.unwrap())
            .map(|o| (o.id.clone(), o))
            .collect()
    }

    fn route_filter(out: &htnn_translators::Output) -> Option<String> {
        out.objects
            .iter()
            .find(|(id, _)| id.name == "htnn-route.default.vs")
            .map(|(_, o)| o.spec_json().to_string())
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version_serving() {
        let opts = htnn_translators::Options::default();
        let mut last_valid = BTreeMap::new();
        let good = translate_keeping_last_valid(&objects("5"), &opts, &mut last_valid);
        let served = route_filter(&good).expect("policy served");
        assert!(served.contains(r#"\"average\":5"#), "{served}");

        let bad = translate_keeping_last_valid(&objects("lots"), &opts, &mut last_valid);
        assert_eq!(route_filter(&bad).as_deref(), Some(served.as_str()));
        let status = bad.statuses.values().next().unwrap();
        assert_eq!(status.reason, Reason::Invalid);
        assert!(
            status
                .message
                .ends_with("(the last valid version keeps serving)"),
            "{}",
            status.message
        );

        let fixed = translate_keeping_last_valid(&objects("7"), &opts, &mut last_valid);
        assert!(route_filter(&fixed).unwrap().contains(r#"\"average\":7"#));
        assert!(fixed.statuses.values().all(Status::is_accepted));

        // Once deleted, a policy is forgotten: re-adding it invalid serves nothing.
        let mut without = objects("7");
        without.retain(|id, _| id.kind != "FilterPolicy");
        translate_keeping_last_valid(&without, &opts, &mut last_valid);
        let readded = translate_keeping_last_valid(&objects("lots"), &opts, &mut last_valid);
        assert_eq!(route_filter(&readded), None);
    }
}

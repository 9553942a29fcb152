//! The tonic ADS service. Each stream is a task with one `select!` over inbound requests,
//! snapshot changes and shutdown that feeds a [`Connection`] and writes what it returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument as _, Span, debug, info, warn};

use super::connection::{Connection, ConnectionStatus, Event, Output, PushTiming, type_label};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Largest response we send: a type's full state goes in one message (istiod accepts up to
/// 2 GiB, istio-mcp.md §3.1).
pub const MAX_ENCODING_MESSAGE_SIZE: usize = 256 << 20;
/// Requests are small; NACK details are the largest thing they carry.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 16 << 20;
/// Our own HTTP/2 pings, to notice a vanished istiod. Client pings (istiod sends one every
/// 30 s) are always answered: hyper has no ping enforcement policy, so none is configured.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Responses queued per stream before the stream task waits for the client.
const RESPONSE_BUFFER: usize = 32;

pub type SnapshotReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// The live streams, by connection id, for `/debug/connections`.
#[derive(Clone, Debug, Default)]
pub struct Connections(Arc<Mutex<BTreeMap<u64, ConnectionStatus>>>);

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every live connection's status.
    pub fn list(&self) -> BTreeMap<u64, ConnectionStatus> {
        self.lock().clone()
    }

    /// `/debug/connections`: `{"<id>": {peer, node_id, types: {<type_url>: {sent_version, …}}}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.lock()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn set(&self, id: u64, status: ConnectionStatus) {
        self.lock().insert(id, status);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ConnectionStatus>> {
        // The map holds plain data; a panic while holding the lock leaves it consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ADS service. Cheap to clone; all clones share the registry and the shutdown signal.
#[derive(Clone)]
pub struct AdsService {
    snapshots: SnapshotReceiver,
    metrics: Arc<Metrics>,
    connections: Connections,
    shutdown: Arc<watch::Sender<bool>>,
    next_id: Arc<AtomicU64>,
    timing: PushTiming,
}

impl AdsService {
    pub fn new(
        snapshots: SnapshotReceiver,
        metrics: Arc<Metrics>,
        connections: Connections,
    ) -> Self {
        Self {
            snapshots,
            metrics,
            connections,
            shutdown: Arc::new(watch::Sender::new(false)),
            next_id: Arc::new(AtomicU64::new(1)),
            timing: PushTiming::default(),
        }
    }

    /// Sets the timing of staged pushes (see [`PushTiming`]).
    pub fn with_timing(mut self, timing: PushTiming) -> Self {
        self.timing = timing;
        self
    }

    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Ends every open stream (cleanly, with status OK) and every stream opened later.
    /// Needed for a graceful server shutdown, which otherwise waits for the streams forever.
    pub fn shutdown_streams(&self) {
        self.shutdown.send_replace(true);
    }

    /// The tonic service with our message size limits.
    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_ENCODING_MESSAGE_SIZE)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        tokio_stream::Empty<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr().map(|a| a.to_string());
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let guard = StreamGuard::new(id, self.metrics.clone(), self.connections.clone());
        let stream = Stream {
            conn: Connection::with_timing(peer.clone(), self.timing),
            timer: None,
            inbound: request.into_inner(),
            tx,
            snapshots: self.snapshots.clone(),
            shutdown: self.shutdown.subscribe(),
            metrics: self.metrics.clone(),
            guard,
        };
        let span = tracing::info_span!(
            "ads",
            conn = id,
            peer = peer.as_deref().unwrap_or("-"),
            node = tracing::field::Empty
        );
        tokio::spawn(stream.run().instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not supported; use state-of-the-world ADS",
        ))
    }
}

/// Counts the stream and lists it in the registry for as long as it lives, however it ends.
struct StreamGuard {
    id: u64,
    metrics: Arc<Metrics>,
    connections: Connections,
}

impl StreamGuard {
    fn new(id: u64, metrics: Arc<Metrics>, connections: Connections) -> Self {
        metrics.connected_clients.inc();
        connections.set(id, ConnectionStatus::default());
        Self {
            id,
            metrics,
            connections,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.connected_clients.dec();
        self.connections.remove(self.id);
    }
}

struct Stream {
    conn: Connection,
    /// The connection's timer, when armed (see [`Output::timer`]).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    snapshots: SnapshotReceiver,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    guard: StreamGuard,
}

enum Step {
    Handle(Output),
    End(&'static str),
}

impl Stream {
    async fn run(mut self) {
        info!("ADS stream opened");
        let current = self.snapshots.borrow_and_update().clone();
        if let Some(snapshot) = current {
            // Nothing is subscribed yet, so this only records the snapshot.
            let out = self.conn.on_snapshot(snapshot);
            if !self.handle(out).await {
                return;
            }
        }
        let mut snapshots_open = true;
        loop {
            let Self {
                conn,
                inbound,
                tx,
                snapshots,
                shutdown,
                timer,
                ..
            } = &mut self;
            let armed = timer.is_some();
            let step = tokio::select! {
                () = async { timer.as_mut().expect("armed").await }, if armed => {
                    *timer = None;
                    Step::Handle(conn.on_timer())
                }
                _ = wait_shutdown(shutdown) => Step::End("server shutting down"),
                () = tx.closed() => Step::End("closed by the client"),
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => Step::Handle(conn.on_request(req)),
                    Some(Err(status)) => {
                        info!(node = conn.node_id().unwrap_or(""), code = ?status.code(), message = status.message(), "ADS stream error");
                        Step::End("stream error")
                    }
                    None => Step::End("closed by the client"),
                },
                changed = snapshots.changed(), if snapshots_open => match changed {
                    Ok(()) => {
                        let current = snapshots.borrow_and_update().clone();
                        Step::Handle(current.map(|s| conn.on_snapshot(s)).unwrap_or_default())
                    }
                    Err(_) => {
                        // The publisher is gone: keep serving the last snapshot.
                        warn!(node = conn.node_id().unwrap_or(""), "snapshot publisher closed; no more updates on this stream");
                        snapshots_open = false;
                        Step::Handle(Output::default())
                    }
                },
            };
            match step {
                Step::Handle(out) => {
                    if !self.handle(out).await {
                        info!(node = self.node(), "ADS stream closed");
                        break;
                    }
                }
                Step::End(reason) => {
                    info!(node = self.node(), reason, "ADS stream closed");
                    break;
                }
            }
        }
    }

    fn node(&self) -> &str {
        self.conn.node_id().unwrap_or("")
    }

    /// Logs and counts the events, publishes the status, sends the responses. `false` when
    /// the stream is over.
    async fn handle(&mut self, out: Output) -> bool {
        if let Some(delay) = out.timer {
            self.timer = Some(Box::pin(tokio::time::sleep(delay)));
        }
        for event in &out.events {
            self.record(event);
        }
        self.guard
            .connections
            .set(self.guard.id, self.conn.status());
        for response in out.responses {
            tokio::select! {
                sent = self.tx.send(Ok(response)) => if sent.is_err() {
                    return false;
                },
                _ = wait_shutdown(&mut self.shutdown) => return false,
            }
        }
        true
    }

    fn record(&self, event: &Event) {
        let node = self.node();
        match event {
            Event::Node { node_id } => {
                Span::current().record("node", node_id.as_str());
                info!(node = %node_id, "ADS client identified");
            }
            Event::Subscribed {
                type_url,
                request_nonce,
                queued,
            } => {
                info!(node, %type_url, nonce = %request_nonce, queued, "subscribed");
            }
            Event::Sent {
                type_url,
                version,
                nonce,
                resources,
            } => {
                self.metrics
                    .pushes
                    .get_or_create(&Metrics::type_label(type_label(type_url)))
                    .inc();
                info!(node, %type_url, %version, %nonce, resources, "sent");
            }
            Event::Acked {
                type_url,
                version,
                nonce,
            } => {
                self.metrics
                    .acks
                    .get_or_create(&Metrics::type_label(type_label(type_url)))
                    .inc();
                debug!(node, %type_url, %version, %nonce, "ACK");
            }
            Event::Nacked {
                type_url,
                rejected_version,
                client_version,
                nonce,
                code,
                message,
            } => {
                self.metrics
                    .nacks
                    .get_or_create(&Metrics::type_label(type_label(type_url)))
                    .inc();
                warn!(
                    node, %type_url, version = %rejected_version, %client_version, %nonce, code, %message,
                    "NACK: the client rejected our response"
                );
            }
            Event::Ignored {
                type_url,
                nonce,
                reason,
            } => {
                debug!(node, %type_url, %nonce, ?reason, "request ignored");
            }
            Event::AckTimeout { type_urls } => {
                warn!(
                    node,
                    ?type_urls,
                    "no ACK in time; pushing the next stage anyway"
                );
            }
        }
    }
}

/// Completes once the server shuts down (or the service is gone).
async fn wait_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves ADS on `listener` until the future is dropped (no graceful stream shutdown).
pub async fn serve(
    listener: TcpListener,
    snapshots: SnapshotReceiver,
    metrics: Arc<Metrics>,
    connections: Connections,
) -> anyhow::Result<()> {
    serve_with_shutdown(
        listener,
        snapshots,
        metrics,
        connections,
        PushTiming::default(),
        std::future::pending(),
    )
    .await
}

/// Serves ADS on `listener` until `shutdown` completes, then ends every stream (status OK) and
/// returns once the connections are closed.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    snapshots: SnapshotReceiver,
    metrics: Arc<Metrics>,
    connections: Connections,
    timing: PushTiming,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("ADS listener address")?;
    let service = AdsService::new(snapshots, metrics, connections).with_timing(timing);
    let stop = service.clone();
    let signal = async move {
        shutdown.await;
        info!("ADS server shutting down");
        stop.shutdown_streams();
    };
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    info!(%addr, "ADS server listening");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, signal)
        .await
        .with_context(|| format!("ADS server on {addr}"))
}

//! The ADS server over real gRPC on loopback, driven by a scripted client that behaves like
//! istiod's MCP client (timestamp nonces on initial requests, ACK for every response).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use htnn_mcp_server::metrics::Metrics;
use htnn_mcp_server::snapshot::{ServedResource, Snapshot, TypeKey, TypeSnapshot};
use htnn_mcp_server::xds::PushTiming;
use htnn_mcp_server::xds::server::{Connections, serve_with_shutdown};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const VS: &str = "networking.istio.io/v1/VirtualService";
const EF: &str = "networking.istio.io/v1alpha3/EnvoyFilter";
const MESH: &str = "core/v1alpha1/MeshConfig";
const MCP_RESOURCE: &str = "type.googleapis.com/istio.mcp.v1alpha1.Resource";
const WAIT: Duration = Duration::from_secs(5);

fn snapshot(types: &[(&str, &[(&str, &str)])]) -> Arc<Snapshot> {
    let mut s = Snapshot::default();
    for (url, resources) in types {
        let resources = resources
            .iter()
            .map(|(name, version)| ServedResource {
                name: name.to_string(),
                version: version.to_string(),
                resource: Any {
                    type_url: MCP_RESOURCE.into(),
                    value: format!("{name}@{version}").into_bytes(),
                },
            })
            .collect();
        s.types.insert(
            TypeKey::from_type_url(url).unwrap(),
            Arc::new(TypeSnapshot::new(resources)),
        );
    }
    Arc::new(s)
}

struct Server {
    addr: std::net::SocketAddr,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: Arc<Metrics>,
    connections: Connections,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (snapshots, rx) = watch::channel(None);
    let metrics = Arc::new(Metrics::default());
    let connections = Connections::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with_shutdown(
        listener,
        rx,
        metrics.clone(),
        connections.clone(),
        PushTiming::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        snapshots,
        metrics,
        connections,
        stop,
        task,
    }
}

/// One scripted istiod stream.
struct Client {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

fn node() -> Option<Node> {
    Some(Node {
        id: "sidecar~127.0.0.1~istiod-0.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    })
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (requests, rx) = mpsc::channel(64);
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self {
            requests,
            responses,
        }
    }

    /// What istiod sends first for each type: a timestamp nonce and the node on the first one.
    async fn subscribe(&self, type_urls: &[&str]) {
        for (i, url) in type_urls.iter().enumerate() {
            self.send(DiscoveryRequest {
                type_url: url.to_string(),
                response_nonce: "2026-08-22 10:00:00.123456789 +0000 UTC m=+0.5".into(),
                node: if i == 0 { node() } else { None },
                ..Default::default()
            })
            .await;
        }
    }

    async fn ack(&self, r: &DiscoveryResponse) {
        self.send(DiscoveryRequest {
            version_info: r.version_info.clone(),
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            node: node(),
            ..Default::default()
        })
        .await;
    }

    async fn nack(&self, r: &DiscoveryResponse, message: &str) {
        self.send(DiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            node: node(),
            error_detail: Some(Status {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    async fn send(&self, r: DiscoveryRequest) {
        self.requests.send(r).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("no response in time")
            .expect("stream error")
            .expect("stream ended")
    }

    async fn recv_n(&mut self, n: usize) -> Vec<DiscoveryResponse> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.recv().await);
        }
        v
    }

    async fn assert_silent(&mut self) {
        if let Ok(msg) =
            tokio::time::timeout(Duration::from_millis(300), self.responses.message()).await
        {
            panic!("unexpected message: {msg:?}");
        }
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn counter(
    family: &prometheus_client::metrics::family::Family<
        htnn_mcp_server::metrics::TypeLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    t: &str,
) -> u64 {
    family.get_or_create(&Metrics::type_label(t)).get()
}

#[tokio::test]
async fn ads_stream_lifecycle() {
    let server = start().await;
    let s1 = snapshot(&[
        (VS, &[("default/a", "1"), ("default/b", "1")]),
        (EF, &[("istio-system/f", "1")]),
    ]);

    // Before the initial load: subscriptions are recorded but never answered.
    let mut c1 = Client::connect(server.addr).await;
    c1.subscribe(&[MESH, VS, EF]).await;
    eventually("3 queued subscriptions", || {
        server
            .connections
            .list()
            .values()
            .any(|c| c.types.len() == 3 && c.types.values().all(|t| t.sent_version.is_none()))
    })
    .await;
    assert_eq!(server.metrics.connected_clients.get(), 1);
    c1.assert_silent().await;

    // Initial load done: every subscription gets the full state of its type, in safe order,
    // one stage after the ACK of the previous one.
    server.snapshots.send_replace(Some(s1.clone()));
    let mut initial = Vec::new();
    for _ in 0..3 {
        let r = c1.recv().await;
        c1.ack(&r).await;
        initial.push(r);
    }
    let urls: Vec<&str> = initial.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(urls, vec![EF, MESH, VS]);
    assert_eq!(initial[0].resources.len(), 1);
    assert!(initial[1].resources.is_empty());
    assert_eq!(initial[2].resources.len(), 2);
    assert!(
        initial[2]
            .resources
            .iter()
            .all(|a| a.type_url == MCP_RESOURCE)
    );
    assert_eq!(
        initial[2].version_info,
        s1.get(&TypeKey::from_type_url(VS).unwrap()).version
    );
    eventually("ACKs recorded", || {
        server.connections.list().values().all(|c| {
            c.types
                .values()
                .all(|t| t.acked_version.is_some() && !t.pending)
        })
    })
    .await;
    assert_eq!(
        counter(&server.metrics.acks, "networking.istio.io/VirtualService"),
        1
    );
    assert_eq!(counter(&server.metrics.pushes, "core/MeshConfig"), 1);
    let status = server.connections.list().into_values().next().unwrap();
    assert_eq!(status.node_id.as_deref(), node().map(|n| n.id).as_deref());
    assert_eq!(
        status.types[VS].acked_version.as_deref(),
        Some(initial[2].version_info.as_str())
    );
    let json = server.connections.to_json();
    assert!(
        json.as_object()
            .unwrap()
            .values()
            .all(|c| c["types"][VS]["acked_version"].is_string()),
        "{json}"
    );

    // The same content again: nothing is resent.
    server.snapshots.send_replace(Some(snapshot(&[
        (VS, &[("default/a", "1"), ("default/b", "1")]),
        (EF, &[("istio-system/f", "1")]),
    ])));
    c1.assert_silent().await;

    // A change to one type pushes that type only.
    let s2 = snapshot(&[
        (VS, &[("default/a", "2"), ("default/b", "1")]),
        (EF, &[("istio-system/f", "1")]),
    ]);
    server.snapshots.send_replace(Some(s2.clone()));
    let push = c1.recv().await;
    assert_eq!(push.type_url, VS);
    assert_eq!(
        push.version_info,
        s2.get(&TypeKey::from_type_url(VS).unwrap()).version
    );
    assert_ne!(push.version_info, initial[2].version_info);
    c1.assert_silent().await;
    c1.nack(&push, "rejected by the test").await;
    eventually("NACK counted", || {
        counter(&server.metrics.nacks, "networking.istio.io/VirtualService") == 1
    })
    .await;
    assert_eq!(
        counter(&server.metrics.pushes, "networking.istio.io/VirtualService"),
        2
    );

    // A second client (e.g. istiod reconnecting) gets the full current state at once.
    let mut c2 = Client::connect(server.addr).await;
    c2.subscribe(&[VS, EF]).await;
    let full = c2.recv_n(2).await;
    assert_eq!(full[0].type_url, VS);
    assert_eq!(full[0].version_info, push.version_info);
    assert_eq!(full[0].resources.len(), 2);
    assert_eq!(full[1].type_url, EF);
    assert_eq!(server.metrics.connected_clients.get(), 2);

    // Disconnects: a clean half-close ends the stream; an abrupt drop is noticed too.
    drop(c1.requests);
    let end = tokio::time::timeout(WAIT, c1.responses.message())
        .await
        .expect("stream not closed");
    assert!(matches!(end, Ok(None)), "{end:?}");
    drop(c2);
    eventually("no connected clients", || {
        server.metrics.connected_clients.get() == 0
    })
    .await;
    assert!(server.connections.is_empty());

    server.stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server.task)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = start().await;
    server
        .snapshots
        .send_replace(Some(snapshot(&[(VS, &[("default/a", "1")])])));
    let mut c = Client::connect(server.addr).await;
    c.subscribe(&[VS]).await;
    let r = c.recv().await;
    c.ack(&r).await;
    eventually("connected", || server.metrics.connected_clients.get() == 1).await;

    server.stop.send(()).unwrap();
    let end = tokio::time::timeout(WAIT, c.responses.message())
        .await
        .expect("stream not closed");
    assert!(matches!(end, Ok(None)), "{end:?}");
    tokio::time::timeout(WAIT, server.task)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    assert_eq!(server.metrics.connected_clients.get(), 0);
}

#[tokio::test]
async fn delta_is_unimplemented() {
    let server = start().await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let (_tx, rx) = mpsc::channel(1);
    let err = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

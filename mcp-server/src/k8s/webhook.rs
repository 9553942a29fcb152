//! The validating admission webhook: the apiserver asks before storing an HTNN object or an
//! istio object, and we refuse what `htnn validate` would report, so a typo is an error at
//! `kubectl apply` time instead of a status condition found later.
//!
//! [`review`] decides one object; [`router`] answers AdmissionReviews on `POST /validate`;
//! [`WebhookServer`] serves it over HTTPS with a certificate re-read when its files change.

mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use htnn_translators::engine::Change;
use htnn_translators::{HTNN_GROUP, ISTIO_NETWORKING, Options, Reason, Translator, kinds, parse};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::net::TcpListener;

/// An UPDATE review carries the object twice (new and old), and objects may reach etcd's
/// 1.5 MiB limit: axum's 2 MiB default would refuse legitimate reviews.
const MAX_REVIEW_BYTES: usize = 16 << 20;

/// Decides one object as the apiserver would store it: `Err` holds the reason to deny it.
///
/// Kinds we do not know are allowed: which objects are sent is the webhook configuration's
/// business. Known kinds go through the strict loader (unknown or mistyped fields are errors
/// naming the field), then HTNN objects and VirtualServices (for their embedded policy) are
/// translated alone. A policy whose target does not exist (yet) is allowed: objects applied
/// together arrive one by one, in any order.
pub fn review(object: &Value) -> Result<(), String> {
    let field = |f: &str| object.get(f).and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Ok(());
    };
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    if group != HTNN_GROUP && kinds::istio_kind(group, kind).is_none() {
        return Ok(());
    }
    let obj = parse::parse_object(0, object.clone()).map_err(|e| match e.id {
        Some(id) => format!("{id}: {}", e.reason),
        None => e.reason,
    })?;
    // ServiceRegistry and DynamicConfig are HTNN's, but not served by htnn yet: refusing
    // them would break applying an existing HTNN setup; their status says so instead.
    let translated = match group {
        HTNN_GROUP => !matches!(kind, "ServiceRegistry" | "DynamicConfig"),
        ISTIO_NETWORKING => kind == "VirtualService",
        _ => false,
    };
    if !translated {
        return Ok(());
    }
    let mut translator = Translator::new(Options::default());
    translator.apply([Change::Upsert(Arc::new(obj))]);
    // The same words as `htnn validate`, so both tools can be grepped alike.
    let invalid: Vec<String> = translator
        .output()
        .statuses
        .iter()
        .filter(|(_, s)| s.reason == Reason::Invalid)
        .map(|(id, s)| format!("{id}: {:?}: {}", s.reason, s.message))
        .collect();
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(invalid.join("; "))
    }
}

/// Decides one admission request. DELETE (and anything without an object) is allowed: a
/// broken object must stay deletable.
fn admit(req: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
    if req.operation == Operation::Delete {
        return Ok(());
    }
    let Some(obj) = &req.object else {
        return Ok(());
    };
    let mut value =
        serde_json::to_value(obj).map_err(|e| format!("cannot re-encode the object: {e}"))?;
    // The apiserver fills these in before admission; a hand-written review may not, and the
    // request says what they are.
    if let Value::Object(map) = &mut value {
        map.entry("apiVersion").or_insert_with(|| {
            let gvk = &req.kind;
            Value::from(if gvk.group.is_empty() {
                gvk.version.clone()
            } else {
                format!("{}/{}", gvk.group, gvk.version)
            })
        });
        map.entry("kind")
            .or_insert_with(|| Value::from(req.kind.kind.clone()));
        if let (Some(ns), Some(Value::Object(meta))) = (&req.namespace, map.get_mut("metadata")) {
            meta.entry("namespace")
                .or_insert_with(|| Value::from(ns.clone()));
        }
    }
    review(&value)
}

#[derive(Clone)]
struct WebhookState {
    denials: Counter,
}

/// `POST /validate`. The apiserver appends `?timeout=10s`; axum routes on the path alone.
pub fn router(denials: Counter) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(WebhookState { denials })
}

async fn validate(State(state): State<WebhookState>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("not an AdmissionReview: {e}")),
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return bad_request("AdmissionReview without a request".into()),
    };
    // Translation is CPU work (a big policy takes milliseconds): keep it off the workers
    // that drive connections.
    let decided = tokio::task::spawn_blocking(move || {
        let verdict = admit(&req);
        (req, verdict)
    })
    .await;
    let (req, verdict) = match decided {
        Ok(d) => d,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("review failed: {e}\n"),
            )
                .into_response();
        }
    };
    let response = AdmissionResponse::from(&req);
    let response = match verdict {
        Ok(()) => response,
        Err(reason) => {
            state.denials.inc();
            tracing::info!(
                kind = %req.kind.kind,
                namespace = req.namespace.as_deref().unwrap_or_default(),
                name = %req.name,
                operation = ?req.operation,
                %reason,
                "admission denied"
            );
            response.deny(reason)
        }
    };
    axum::Json(response.into_review()).into_response()
}

fn bad_request(reason: String) -> Response {
    tracing::warn!(%reason, "bad admission request");
    (StatusCode::BAD_REQUEST, reason + "\n").into_response()
}

/// The webhook's HTTPS server, bound and with its certificate loaded.
pub struct WebhookServer {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    denials: Counter,
}

impl WebhookServer {
    /// Loads the certificate chain and key (an error names the file at fault) and binds
    /// `addr`. Both files are re-read when they change, so a rotated certificate is served
    /// without a restart.
    pub async fn bind(addr: SocketAddr, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let tls = tls::server_config(cert, key)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the webhook address {addr}"))?;
        Ok(Self {
            listener,
            tls,
            denials: Counter::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Counts denied requests; register it before [`run`](Self::run).
    pub fn denials(&self) -> Counter {
        self.denials.clone()
    }

    /// Serves until `shutdown` completes. Failing connections are logged and dropped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let app = router(self.denials);
        tls::serve(self.listener, self.tls, app, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vs(annotations: Value, spec: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "ns", "annotations": annotations},
            "spec": spec,
        })
    }

    fn policy(filters: Value) -> Value {
        json!({
            "apiVersion": "htnn.mosn.io/v1",
            "kind": "FilterPolicy",
            // What a real apiserver adds; none of it may matter.
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "0b0e4b6c-1f1e-4c39-9d5a-3b1f6f0e2a11",
                "resourceVersion": "42", "generation": 3,
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {
                "targetRef": {"group": "networking.istio.io", "kind": "VirtualService", "name": "vs"},
                "filters": filters,
            },
            "status": {"conditions": []},
        })
    }

    const ROUTE: &str = r#"{"hosts": ["a.example.com"], "gateways": ["istio-system/gw"],
        "http": [{"name": "r", "route": [{"destination": {"host": "b"}}]}]}"#;

    #[test]
    fn valid_policy_is_allowed_even_without_its_target() {
        // Alone, its VirtualService is missing: TargetNotFound, which is no reason to deny.
        let p = policy(json!({"limitReq": {"config": {"average": 5, "burst": 5}}}));
        assert_eq!(review(&p), Ok(()));
    }

    #[test]
    fn invalid_plugin_config_is_denied_naming_the_field() {
        let p = policy(json!({"limitReq": {"config": {"average": "five"}}}));
        let e = review(&p).unwrap_err();
        assert!(e.starts_with("FilterPolicy ns/p: Invalid: "), "{e}");
        assert!(e.contains("spec.filters.limitReq.config.average"), "{e}");
    }

    #[test]
    fn istio_spec_errors_name_the_field() {
        let mut spec: Value = serde_json::from_str(ROUTE).unwrap();
        spec["http"][0]["timeoutt"] = json!("5s");
        let e = review(&vs(json!({}), spec)).unwrap_err();
        assert!(e.starts_with("VirtualService ns/vs: "), "{e}");
        assert!(e.contains("spec.http[0].timeoutt: unknown field"), "{e}");
        assert_eq!(
            review(&vs(json!({}), serde_json::from_str(ROUTE).unwrap())),
            Ok(())
        );
    }

    #[test]
    fn embedded_policy_is_checked() {
        let route: Value = serde_json::from_str(ROUTE).unwrap();
        let bad = json!({"htnn.mosn.io/filterpolicy": r#"{"filters": {"limitReq": {"config": {"average": -1}}}}"#});
        let e = review(&vs(bad, route.clone())).unwrap_err();
        assert!(
            e.starts_with("FilterPolicy ns/embedded-virtualservice-vs: Invalid: annotation htnn.mosn.io/filterpolicy: "),
            "{e}"
        );
        assert!(e.contains("limitReq.config.average"), "{e}");
        let legacy = json!({"htnn.mosn.io/httpfilterpolicy": "{not json"});
        let e = review(&vs(legacy, route.clone())).unwrap_err();
        assert!(
            e.contains("annotation htnn.mosn.io/httpfilterpolicy: invalid JSON"),
            "{e}"
        );
        // Its gateway does not exist here: TargetNotFound, allowed.
        let good = json!({"htnn.mosn.io/filterpolicy": r#"{"filters": {"demo": {"config": {"hostName": "x-a"}}}}"#});
        assert_eq!(review(&vs(good, route)), Ok(()));
    }

    #[test]
    fn unknown_kinds_are_allowed_and_bad_versions_of_known_ones_denied() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1}});
        assert_eq!(review(&cm), Ok(()));
        let gw = json!({"apiVersion": "networking.istio.io/v2", "kind": "Gateway", "metadata": {"name": "g"}});
        assert!(review(&gw).unwrap_err().contains("not served"));
    }

    #[test]
    fn kinds_htnn_does_not_serve_yet_are_let_through() {
        let sr = json!({"apiVersion": "htnn.mosn.io/v1", "kind": "ServiceRegistry",
            "metadata": {"name": "nacos", "namespace": "default"},
            "spec": {"type": "nacos", "config": {"serverUrl": "http://nacos:8848"}}});
        assert_eq!(review(&sr), Ok(()));
        let mut bad = sr.clone();
        bad["specc"] = json!({});
        assert!(review(&bad).unwrap_err().contains("specc"));
    }

    fn admission(operation: &str, object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "htnn.mosn.io", "version": "v1", "kind": "FilterPolicy"},
                "resource": {"group": "htnn.mosn.io", "version": "v1", "resource": "filterpolicies"},
                "name": "p", "namespace": "ns", "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object, "oldObject": null, "dryRun": false,
            },
        })
    }

    async fn call(app: Router, body: String) -> (StatusCode, Value) {
        use hyper::service::Service;
        let req = axum::http::Request::post("/validate?timeout=10s")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = hyper_util::service::TowerToHyperService::new(app)
            .call(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    #[tokio::test]
    async fn handler_round_trips_reviews() {
        let denials = Counter::default();
        let app = router(denials.clone());
        let mut bad = policy(json!({"limitReq": {"config": {"average": "five"}}}));
        // Namespace from the request, as when a client leaves it out of the object.
        bad["metadata"].as_object_mut().unwrap().remove("namespace");
        let (status, v) = call(app.clone(), admission("CREATE", bad.clone()).to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        let r = &v["response"];
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], false);
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("FilterPolicy ns/p: Invalid: spec.filters.limitReq"),
            "{msg}"
        );
        assert_eq!(denials.get(), 1);

        let good = policy(json!({"demo": {"config": {"hostName": "x-a"}}}));
        let (_, v) = call(app.clone(), admission("UPDATE", good).to_string()).await;
        assert_eq!(v["response"]["allowed"], true, "{v}");
        let (_, v) = call(app.clone(), admission("DELETE", bad).to_string()).await;
        assert_eq!(v["response"]["allowed"], true, "{v}");
        let (_, v) = call(app.clone(), admission("CONNECT", Value::Null).to_string()).await;
        assert_eq!(v["response"]["allowed"], true, "{v}");
        assert_eq!(denials.get(), 1);

        let (status, v) = call(app.clone(), "{\"kind\": 1}".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            v.as_str().unwrap().starts_with("not an AdmissionReview"),
            "{v}"
        );
        let empty = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        let (status, v) = call(app, empty.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v.as_str().unwrap().contains("without a request"), "{v}");
    }
}

//! Admin HTTP server: health, readiness, Prometheus metrics and debug views.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::Value;

/// Renders a debug view when it is asked for: views of large configs are expensive, and
/// asked for rarely.
pub type View = Box<dyn Fn() -> Value + Send + Sync>;

pub struct AdminState {
    /// Set once the initial load completed and the first snapshot is published.
    pub ready: AtomicBool,
    pub registry: Registry,
    /// What `/debug/snapshot` shows: what is served, with the parsed specs and load errors.
    pub snapshot_view: View,
    /// What `/debug/status` shows: the status of every HTNN object.
    pub status_view: View,
    pub connections_view: View,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/snapshot", get(snapshot))
        .route("/debug/connections", get(connections))
        .route("/debug/status", get(status))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "initial load not complete\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn snapshot(State(s): State<Arc<AdminState>>) -> Response {
    if !s.ready.load(Ordering::Acquire) {
        return axum::Json(serde_json::json!({"ready": false})).into_response();
    }
    view(s, |s| (s.snapshot_view)()).await
}

/// Renders a view off the async workers: it may wait for the pipeline lock.
async fn view(s: Arc<AdminState>, render: fn(&AdminState) -> Value) -> Response {
    match tokio::task::spawn_blocking(move || render(&s)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn connections(State(s): State<Arc<AdminState>>) -> Response {
    axum::Json((s.connections_view)()).into_response()
}

async fn status(State(s): State<Arc<AdminState>>) -> Response {
    view(s, |s| (s.status_view)()).await
}

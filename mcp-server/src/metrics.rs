//! Prometheus metrics of the server, exposed on the admin port at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// `group/Kind`, a bounded set.
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub connected_clients: Gauge,
    pub pushes: Family<TypeLabel, Counter>,
    pub acks: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
    pub snapshot_updates: Counter,
    pub snapshot_info: Family<VersionLabel, Gauge>,
    pub load_errors: Family<SourceLabel, Counter>,
    pub invalid_objects: Gauge,
    /// From a batch of source changes to the new snapshot being ready to push.
    pub translate_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connected_clients: Gauge::default(),
            pushes: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            snapshot_updates: Counter::default(),
            snapshot_info: Family::default(),
            load_errors: Family::default(),
            invalid_objects: Gauge::default(),
            // 100 µs .. ~3 s.
            translate_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 16)),
        }
    }
}

impl Metrics {
    pub fn type_label(t: impl ToString) -> TypeLabel {
        TypeLabel {
            r#type: t.to_string(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "htnn_xds_connected_clients",
            "MCP/ADS streams currently open (istiod instances)",
            self.connected_clients.clone(),
        );
        registry.register(
            "htnn_xds_pushes",
            "Responses sent, by type",
            self.pushes.clone(),
        );
        registry.register("htnn_xds_acks", "ACKs received, by type", self.acks.clone());
        registry.register(
            "htnn_xds_nacks",
            "NACKs received, by type",
            self.nacks.clone(),
        );
        registry.register(
            "htnn_snapshot_updates",
            "Snapshots published (each changes the served content)",
            self.snapshot_updates.clone(),
        );
        registry.register(
            "htnn_snapshot_info",
            "Version of the snapshot being served (value is always 1)",
            self.snapshot_info.clone(),
        );
        registry.register(
            "htnn_load_errors",
            "Objects or files that failed to load, by source",
            self.load_errors.clone(),
        );
        registry.register(
            "htnn_invalid_objects",
            "Objects currently rejected (their last good state, if any, keeps serving)",
            self.invalid_objects.clone(),
        );
        registry.register(
            "htnn_translate_seconds",
            "Time from a batch of source changes to the new snapshot being ready to push",
            self.translate_seconds.clone(),
        );
    }

    pub fn set_snapshot_version(&self, version: &str) {
        self.snapshot_info.clear();
        self.snapshot_info
            .get_or_create(&VersionLabel {
                version: version.to_string(),
            })
            .set(1);
        self.snapshot_updates.inc();
    }
}

//! The kinds we understand: every istio kind istiod requests over MCP, and HTNN's kinds.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use htnn_proto::istio::extensions::v1alpha1 as ext;
use htnn_proto::istio::networking::v1alpha3 as net;
use htnn_proto::istio::networking::v1beta1 as netb;
use htnn_proto::istio::security::v1beta1 as sec;
use htnn_proto::istio::telemetry::v1alpha1 as tel;
use htnn_proto::spec::{self, SpecError};

pub const HTNN_GROUP: &str = "htnn.mosn.io";

type ParseFn = fn(&str, Value) -> Result<Vec<u8>, SpecError>;
type JsonFn = fn(&[u8]) -> Value;

/// An istio config kind as served over MCP.
pub struct IstioKind {
    pub group: &'static str,
    pub kind: &'static str,
    /// apiVersions (without group) that users may write.
    pub versions: &'static [&'static str],
    /// Full protobuf name of the body, e.g. `istio.networking.v1alpha3.VirtualService`.
    pub proto: &'static str,
    parse: ParseFn,
    json: JsonFn,
}

fn parse_as<T>(full_name: &str, spec: Value) -> Result<Vec<u8>, SpecError>
where
    T: DeserializeOwned + Serialize + prost::Message,
{
    let message: T = spec::parse(full_name, spec)?;
    Ok(message.encode_to_vec())
}

fn json_of<T>(body: &[u8]) -> Value
where
    T: Serialize + prost::Message + Default,
{
    T::decode(body)
        .ok()
        .and_then(|m| spec::to_json(&m).ok())
        .unwrap_or(Value::Null)
}

macro_rules! istio_kind {
    ($group:literal, $kind:literal, [$($v:literal),+], $proto:literal, $ty:ty) => {
        IstioKind { group: $group, kind: $kind, versions: &[$($v),+], proto: $proto, parse: parse_as::<$ty>, json: json_of::<$ty> }
    };
}

pub static ISTIO_KINDS: &[IstioKind] = &[
    istio_kind!(
        "networking.istio.io",
        "VirtualService",
        ["v1alpha3", "v1beta1", "v1"],
        "istio.networking.v1alpha3.VirtualService",
        net::VirtualService
    ),
    istio_kind!(
        "networking.istio.io",
        "Gateway",
        ["v1alpha3", "v1beta1", "v1"],
        "istio.networking.v1alpha3.Gateway",
        net::Gateway
    ),
    istio_kind!(
        "networking.istio.io",
        "DestinationRule",
        ["v1alpha3", "v1beta1", "v1"],
        "istio.networking.v1alpha3.DestinationRule",
        net::DestinationRule
    ),
    istio_kind!(
        "networking.istio.io",
        "ServiceEntry",
        ["v1alpha3", "v1beta1", "v1"],
        "istio.networking.v1alpha3.ServiceEntry",
        net::ServiceEntry
    ),
    istio_kind!(
        "networking.istio.io",
        "Sidecar",
        ["v1alpha3", "v1beta1", "v1"],
        "istio.networking.v1alpha3.Sidecar",
        net::Sidecar
    ),
    istio_kind!(
        "networking.istio.io",
        "WorkloadEntry",
        ["v1alpha3", "v1beta1", "v1"],
        "istio.networking.v1alpha3.WorkloadEntry",
        net::WorkloadEntry
    ),
    istio_kind!(
        "networking.istio.io",
        "WorkloadGroup",
        ["v1alpha3", "v1beta1", "v1"],
        "istio.networking.v1alpha3.WorkloadGroup",
        net::WorkloadGroup
    ),
    istio_kind!(
        "networking.istio.io",
        "EnvoyFilter",
        ["v1alpha3"],
        "istio.networking.v1alpha3.EnvoyFilter",
        net::EnvoyFilter
    ),
    istio_kind!(
        "networking.istio.io",
        "ProxyConfig",
        ["v1beta1"],
        "istio.networking.v1beta1.ProxyConfig",
        netb::ProxyConfig
    ),
    istio_kind!(
        "security.istio.io",
        "AuthorizationPolicy",
        ["v1beta1", "v1"],
        "istio.security.v1beta1.AuthorizationPolicy",
        sec::AuthorizationPolicy
    ),
    istio_kind!(
        "security.istio.io",
        "PeerAuthentication",
        ["v1beta1", "v1"],
        "istio.security.v1beta1.PeerAuthentication",
        sec::PeerAuthentication
    ),
    istio_kind!(
        "security.istio.io",
        "RequestAuthentication",
        ["v1beta1", "v1"],
        "istio.security.v1beta1.RequestAuthentication",
        sec::RequestAuthentication
    ),
    istio_kind!(
        "telemetry.istio.io",
        "Telemetry",
        ["v1alpha1", "v1"],
        "istio.telemetry.v1alpha1.Telemetry",
        tel::Telemetry
    ),
    istio_kind!(
        "extensions.istio.io",
        "WasmPlugin",
        ["v1alpha1"],
        "istio.extensions.v1alpha1.WasmPlugin",
        ext::WasmPlugin
    ),
    istio_kind!(
        "extensions.istio.io",
        "TrafficExtension",
        ["v1alpha1"],
        "istio.extensions.v1alpha1.TrafficExtension",
        ext::TrafficExtension
    ),
];

/// HTNN kinds (all `htnn.mosn.io/v1`). Their specs are kept as JSON and checked by the
/// translator.
pub const HTNN_KINDS: &[&str] = &[
    "FilterPolicy",
    "HTTPFilterPolicy",
    "Consumer",
    "ServiceRegistry",
    "DynamicConfig",
];

impl IstioKind {
    /// The protobuf encoding of a spec given in istio's JSON/YAML form.
    pub fn parse(&self, spec: Value) -> Result<Vec<u8>, SpecError> {
        (self.parse)(self.proto, spec)
    }

    /// The proto3-JSON form of an encoded spec (`null` if it does not decode).
    pub fn json(&self, body: &[u8]) -> Value {
        (self.json)(body)
    }

    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }
}

/// What an `apiVersion`/`kind` pair denotes.
pub enum Known {
    Istio(&'static IstioKind),
    Htnn,
}

/// Looks up a kind, returning why it is not accepted otherwise.
pub fn lookup(api_version: &str, kind: &str) -> Result<Known, String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if group == HTNN_GROUP {
        if version != "v1" {
            return Err(format!(
                "apiVersion {api_version} is not served (use {HTNN_GROUP}/v1)"
            ));
        }
        return if HTNN_KINDS.contains(&kind) {
            Ok(Known::Htnn)
        } else {
            Err(format!("unknown kind {kind} in {HTNN_GROUP}"))
        };
    }
    let Some(k) = ISTIO_KINDS.iter().find(|k| k.is(group, kind)) else {
        return Err(format!("unsupported kind {kind} ({api_version})"));
    };
    if !k.versions.contains(&version) {
        return Err(format!(
            "apiVersion {api_version} is not served for {kind} (served: {})",
            k.versions
                .iter()
                .map(|v| format!("{group}/{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Known::Istio(k))
}

pub fn istio_kind(group: &str, kind: &str) -> Option<&'static IstioKind> {
    ISTIO_KINDS.iter().find(|k| k.is(group, kind))
}

/// The kind whose body is the protobuf message `proto`.
pub fn istio_kind_by_proto(proto: &str) -> Option<&'static IstioKind> {
    ISTIO_KINDS.iter().find(|k| k.proto == proto)
}

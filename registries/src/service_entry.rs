//! The ServiceEntry HTNN generates for one registry service.
//!
//! We build the prost type rather than JSON: equality (used to drop the duplicate callbacks
//! Nacos SDKs fire) is structural and cheap, every map is a `BTreeMap` so the encoding is
//! deterministic, and the wiring encodes it straight into an MCP resource body without a
//! JSON round-trip.

use std::collections::BTreeMap;
use std::fmt;

use htnn_proto::istio::networking::v1alpha3::{
    ServiceEntry, ServicePort, WorkloadEntry, service_entry,
};

use crate::host::{HostError, ServiceId};

/// The label every generated ServiceEntry carries, in the root namespace.
pub const CREATED_BY_LABEL: (&str, &str) = ("htnn.mosn.io/created-by", "ServiceRegistry");

/// Istio's protocol names; the registry writes them in any case in a `protocol` metadata key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Grpc,
    Http2,
    Mongo,
    Tcp,
    Tls,
}

impl Protocol {
    /// `None` for a protocol HTNN does not map (HTNN emits a port named `Unsupported`,
    /// which istio treats as TCP; we reject the instance instead, with a reason).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Self::Http,
            "https" => Self::Https,
            "grpc" => Self::Grpc,
            "http2" => Self::Http2,
            "mongo" => Self::Mongo,
            "tcp" => Self::Tcp,
            "tls" => Self::Tls,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::Grpc => "GRPC",
            Self::Http2 => "HTTP2",
            Self::Mongo => "MONGO",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }
}

/// One instance as a registry client reports it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Instance {
    pub address: String,
    pub port: u32,
    /// Nacos instance metadata / Consul service meta; becomes the endpoint's labels.
    pub metadata: BTreeMap<String, String>,
    /// Istio's endpoint weight; `None` (or 0) leaves it unset. Nacos's float weights are the
    /// client's to round.
    pub weight: Option<u32>,
    pub healthy: bool,
    pub enabled: bool,
}

/// An instance left out of the ServiceEntry, to be logged by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub address: String,
    pub port: u32,
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instance {}:{}: {}",
            self.address, self.port, self.reason
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    pub host: String,
    /// `None` when no instance is healthy, enabled and valid: the ServiceEntry goes away.
    pub entry: Option<ServiceEntry>,
    pub rejected: Vec<Rejected>,
}

/// Builds the ServiceEntry of `service` in registry `registry` (the ServiceRegistry's name).
///
/// Instances are sorted by address and port first: registries return them in no stable
/// order, and an order change alone must not look like an update. "The first instance's
/// port" (HTNN's rule for the single service port) is therefore the lowest address's.
pub fn build(
    registry: &str,
    service: &ServiceId,
    instances: &[Instance],
) -> Result<Built, HostError> {
    let host = service.host(registry)?;
    let mut sorted: Vec<&Instance> = instances.iter().collect();
    sorted.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));

    let mut rejected = Vec::new();
    let mut port: Option<ServicePort> = None;
    let mut endpoints = Vec::new();
    for i in sorted {
        // Unhealthy and disabled instances are normal churn, not worth a log line.
        if !i.healthy || !i.enabled {
            continue;
        }
        let reject = |reason: String| Rejected {
            address: i.address.clone(),
            port: i.port,
            reason,
        };
        let protocol = match i.metadata.get("protocol").filter(|p| !p.is_empty()) {
            None => Protocol::Http,
            Some(p) => match Protocol::parse(p) {
                Some(p) => p,
                None => {
                    rejected.push(reject(format!("unsupported protocol {p:?}")));
                    continue;
                }
            },
        };
        if i.address.is_empty() {
            rejected.push(reject("no address".into()));
            continue;
        }
        if !(1..=65535).contains(&i.port) {
            rejected.push(reject("port is not in 1-65535".into()));
            continue;
        }
        let name = protocol.as_str().to_string();
        port.get_or_insert_with(|| ServicePort {
            number: i.port,
            protocol: name.clone(),
            name: name.clone(),
            target_port: 0,
        });
        endpoints.push(WorkloadEntry {
            address: i.address.clone(),
            ports: BTreeMap::from([(name, i.port)]),
            labels: i.metadata.clone(),
            weight: i.weight.unwrap_or(0),
            ..Default::default()
        });
    }
    let entry = port.map(|port| ServiceEntry {
        hosts: vec![host.clone()],
        ports: vec![port],
        location: service_entry::Location::MeshInternal as i32,
        resolution: service_entry::Resolution::Static as i32,
        endpoints,
        ..Default::default()
    });
    Ok(Built {
        host,
        entry,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServiceId {
        ServiceId::Nacos {
            service: "echo".into(),
            group: "DEFAULT_GROUP".into(),
            namespace: "public".into(),
        }
    }

    fn inst(address: &str, port: u32, meta: &[(&str, &str)]) -> Instance {
        Instance {
            address: address.into(),
            port,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            weight: None,
            healthy: true,
            enabled: true,
        }
    }

    #[test]
    fn builds_htnn_shape() {
        let mut b = inst("10.0.0.2", 9090, &[("protocol", "grpc"), ("zone", "a")]);
        b.weight = Some(3);
        let built = build("reg", &svc(), &[b, inst("10.0.0.1", 8080, &[])]).unwrap();
        assert_eq!(built.host, "echo.default-group.public.reg.nacos");
        assert!(built.rejected.is_empty());
        let se = built.entry.unwrap();
        assert_eq!(se.hosts, ["echo.default-group.public.reg.nacos"]);
        assert_eq!(se.location, service_entry::Location::MeshInternal as i32);
        assert_eq!(se.resolution, service_entry::Resolution::Static as i32);
        // Sorted by address: 10.0.0.1 comes first and gives the port.
        assert_eq!(
            se.ports,
            [ServicePort {
                number: 8080,
                protocol: "HTTP".into(),
                name: "HTTP".into(),
                target_port: 0
            }]
        );
        assert_eq!(se.endpoints.len(), 2);
        assert_eq!(se.endpoints[0].address, "10.0.0.1");
        assert_eq!(
            se.endpoints[0].ports,
            BTreeMap::from([("HTTP".into(), 8080)])
        );
        assert_eq!(se.endpoints[0].weight, 0);
        assert_eq!(
            se.endpoints[1].ports,
            BTreeMap::from([("GRPC".into(), 9090)])
        );
        assert_eq!(se.endpoints[1].labels["zone"], "a");
        assert_eq!(se.endpoints[1].labels["protocol"], "grpc");
        assert_eq!(se.endpoints[1].weight, 3);
    }

    #[test]
    fn protocol_mapping() {
        for (raw, want) in [
            ("http", "HTTP"),
            ("HTTPS", "HTTPS"),
            ("gRPC", "GRPC"),
            ("http2", "HTTP2"),
            ("Mongo", "MONGO"),
            ("tcp", "TCP"),
            ("TLS", "TLS"),
            ("", "HTTP"),
        ] {
            let built = build("r", &svc(), &[inst("1.1.1.1", 80, &[("protocol", raw)])]).unwrap();
            assert_eq!(built.entry.unwrap().ports[0].name, want, "{raw}");
        }
        let built = build(
            "r",
            &svc(),
            &[
                inst("1.1.1.1", 80, &[("protocol", "dubbo")]),
                inst("1.1.1.2", 81, &[]),
            ],
        )
        .unwrap();
        assert_eq!(
            built.rejected,
            [Rejected {
                address: "1.1.1.1".into(),
                port: 80,
                reason: "unsupported protocol \"dubbo\"".into()
            }]
        );
        assert_eq!(
            built.rejected[0].to_string(),
            "instance 1.1.1.1:80: unsupported protocol \"dubbo\""
        );
        let se = built.entry.unwrap();
        assert_eq!(se.ports[0].number, 81);
        assert_eq!(se.endpoints.len(), 1);
    }

    #[test]
    fn only_healthy_enabled_valid_instances() {
        let mut sick = inst("1.1.1.1", 80, &[]);
        sick.healthy = false;
        let mut off = inst("1.1.1.2", 80, &[]);
        off.enabled = false;
        let built = build("r", &svc(), &[sick.clone(), off.clone()]).unwrap();
        assert_eq!((built.entry, built.rejected.len()), (None, 0));

        let built = build("r", &svc(), &[inst("", 80, &[]), inst("1.1.1.3", 0, &[])]).unwrap();
        assert_eq!(built.entry, None);
        assert_eq!(built.rejected.len(), 2);

        assert_eq!(build("r", &svc(), &[]).unwrap().entry, None);
    }

    #[test]
    fn instance_order_does_not_change_the_entry() {
        let a = inst("1.1.1.1", 80, &[]);
        let b = inst("1.1.1.2", 81, &[]);
        assert_eq!(
            build("r", &svc(), &[a.clone(), b.clone()]).unwrap(),
            build("r", &svc(), &[b, a]).unwrap()
        );
    }

    #[test]
    fn bad_host_is_an_error() {
        let id = ServiceId::Nacos {
            service: "a:b".into(),
            group: "g".into(),
            namespace: "n".into(),
        };
        assert!(build("r", &id, &[inst("1.1.1.1", 80, &[])]).is_err());
    }
}

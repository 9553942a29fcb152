//! ServiceEntry host names. The host is both the ServiceEntry's name in istio and the
//! cluster domain in Envoy, so it has to be a valid DNS name and stable for a service.

use std::fmt;

/// The identity of one registry service, as much of it as goes into the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceId {
    /// `<service>.<group>.<namespace>.<registry>.nacos`
    Nacos {
        service: String,
        group: String,
        namespace: String,
    },
    /// `<tags joined by ->.<service>.<namespace>.<dc>.<registry>.consul`
    Consul {
        service: String,
        tags: Vec<String>,
        namespace: String,
        datacenter: String,
    },
}

/// A host that istio would refuse; the service is skipped with this reason logged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host {host:?} is not a valid DNS name: {reason}")]
pub struct HostError {
    pub host: String,
    pub reason: &'static str,
}

impl ServiceId {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Nacos { .. } => "nacos",
            Self::Consul { .. } => "consul",
        }
    }

    /// HTNN's naming: parts joined by `.`, empty parts dropped (an unset Consul namespace
    /// or datacenter must not yield `..`), `_` turned into `-` (Nacos's `DEFAULT_GROUP`
    /// is not a DNS label) and lower-cased.
    ///
    /// HTNN keeps a `_` in the *service* part; we replace it too, because istio rejects such
    /// a host and the whole ServiceEntry would be dropped.
    pub fn host(&self, registry: &str) -> Result<String, HostError> {
        let joined_tags;
        let parts: [&str; 6] = match self {
            Self::Nacos {
                service,
                group,
                namespace,
            } => [service, group, namespace, registry, "nacos", ""],
            Self::Consul {
                service,
                tags,
                namespace,
                datacenter,
            } => {
                joined_tags = tags
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("-");
                [
                    &joined_tags,
                    service,
                    namespace,
                    datacenter,
                    registry,
                    "consul",
                ]
            }
        };
        let host = parts
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(".")
            .replace('_', "-")
            .to_lowercase();
        check_dns_name(&host).map_err(|reason| HostError {
            host: host.clone(),
            reason,
        })?;
        Ok(host)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nacos {
                service,
                group,
                namespace,
            } => write!(f, "nacos service {namespace}/{group}/{service}"),
            Self::Consul {
                service,
                tags,
                namespace,
                datacenter,
            } => write!(
                f,
                "consul service {datacenter}/{namespace}/{service} tags {tags:?}"
            ),
        }
    }
}

/// RFC 1123 rules, as istio validates ServiceEntry hosts.
fn check_dns_name(host: &str) -> Result<(), &'static str> {
    if host.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nacos(service: &str, group: &str, namespace: &str) -> ServiceId {
        ServiceId::Nacos {
            service: service.into(),
            group: group.into(),
            namespace: namespace.into(),
        }
    }

    fn consul(tags: &[&str], service: &str, namespace: &str, dc: &str) -> ServiceId {
        ServiceId::Consul {
            service: service.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            namespace: namespace.into(),
            datacenter: dc.into(),
        }
    }

    #[test]
    fn nacos_hosts() {
        assert_eq!(
            nacos("test", "DEFAULT_GROUP", "public")
                .host("default")
                .unwrap(),
            "test.default-group.public.default.nacos"
        );
        assert_eq!(
            nacos("My_Svc", "Grp", "Dev_NS").host("Reg_1").unwrap(),
            "my-svc.grp.dev-ns.reg-1.nacos"
        );
        // A dotted service name stays dotted: each part is still a valid label.
        assert_eq!(
            nacos("com.foo.Bar", "g", "public").host("r").unwrap(),
            "com.foo.bar.g.public.r.nacos"
        );
    }

    #[test]
    fn consul_hosts_collapse_empty_parts() {
        assert_eq!(
            consul(&["v1", "Blue"], "web", "ns", "dc1")
                .host("c")
                .unwrap(),
            "v1-blue.web.ns.dc1.c.consul"
        );
        assert_eq!(
            consul(&[], "web", "", "").host("c").unwrap(),
            "web.c.consul"
        );
        assert_eq!(
            consul(&["", "primary", ""], "Web_API", "", "DC_2")
                .host("c")
                .unwrap(),
            "primary.web-api.dc-2.c.consul"
        );
    }

    #[test]
    fn invalid_hosts_are_reported() {
        let e = nacos("providers:com.foo.Bar:1.0:", "g", "public")
            .host("r")
            .unwrap_err();
        assert_eq!(e.reason, "only letters, digits, '-' and '.' are allowed");
        assert!(nacos("-x", "g", "n").host("r").is_err());
        assert!(nacos("a..b", "g", "n").host("r").is_err());
        assert!(nacos(&"a".repeat(64), "g", "n").host("r").is_err());
        assert_eq!(nacos("s", "g", "n").kind(), "nacos");
    }
}

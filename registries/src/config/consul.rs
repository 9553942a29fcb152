use std::time::Duration;

use serde_json::Value;

use super::{Config, Fields, ServerUrl};
use crate::FieldError;

/// `spec.config` of a `type: consul` ServiceRegistry, defaults applied. Empty strings mean
/// "not set": Consul's own defaults (the agent's datacenter, the default namespace, the
/// anonymous token) apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulConfig {
    /// Without a port, the scheme's port is used ([`ServerUrl::scheme_port`]), as HTNN does.
    pub server_url: ServerUrl,
    pub data_center: String,
    pub namespace: String,
    pub token: String,
    /// Also the `wait` of the blocking queries.
    pub service_refresh_interval: Duration,
}

impl ConsulConfig {
    pub fn validate(config: &Value) -> Result<Self, FieldError> {
        let mut f = Fields::new(config)?;
        let server_url = f.server_url("serverUrl")?;
        let data_center = f.string("dataCenter")?.unwrap_or_default();
        let namespace = f.string("namespace")?.unwrap_or_default();
        let token = f.string("token")?.unwrap_or_default();
        let service_refresh_interval = f.refresh_interval("serviceRefreshInterval")?;
        f.finish()?;
        Ok(Self {
            server_url,
            data_center,
            namespace,
            token,
            service_refresh_interval,
        })
    }

    /// [`ConsulConfig::validate`] as a [`crate::RegistryType`] validator.
    pub fn validate_erased(config: &Value) -> Result<Config, FieldError> {
        Self::validate(config).map(Config::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_fields() {
        let c = ConsulConfig::validate(&json!({"serverUrl": "http://127.0.0.1:8500"})).unwrap();
        assert_eq!(c.server_url.port, Some(8500));
        assert_eq!(
            (
                c.data_center.as_str(),
                c.namespace.as_str(),
                c.token.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(c.service_refresh_interval, Duration::from_secs(30));

        let c = ConsulConfig::validate(&json!({
            "serverUrl": "https://consul", "dataCenter": "dc1", "namespace": "ns",
            "token": "t", "serviceRefreshInterval": "1m",
        }))
        .unwrap();
        assert_eq!(c.server_url.scheme_port(), 443);
        assert_eq!(c.data_center, "dc1");
        assert_eq!(c.service_refresh_interval, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_field() {
        let err = |v: Value| ConsulConfig::validate(&v).unwrap_err().to_string();
        assert_eq!(err(json!({})), "config.serverUrl: required");
        assert_eq!(
            err(json!({"serverUrl": "http://c", "datacenter": "dc1"})),
            "config.datacenter: unknown field"
        );
        assert_eq!(
            err(json!({"serverUrl": "http://c", "serviceRefreshInterval": "0.5s"})),
            "config.serviceRefreshInterval: must be at least 1s"
        );
        assert_eq!(
            err(json!({"serverUrl": "http://c", "token": 5})),
            "config.token: must be a string, got a number"
        );
    }
}

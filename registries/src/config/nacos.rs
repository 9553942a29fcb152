use std::time::Duration;

use serde_json::Value;

use super::{Config, Fields, ServerUrl, field};
use crate::FieldError;

pub const DEFAULT_PORT: u16 = 8848;
pub const DEFAULT_NAMESPACE: &str = "public";
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";

/// Which Nacos protocol to speak: v1 is the HTTP OpenAPI (polled), v2 is gRPC with
/// server-pushed subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NacosVersion {
    V1,
    V2,
}

/// `spec.config` of a `type: nacos` ServiceRegistry, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NacosConfig {
    pub version: NacosVersion,
    /// The port is always set: HTNN defaults it to 8848, Nacos's own default.
    pub server_url: ServerUrl,
    pub namespace: String,
    pub groups: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub service_refresh_interval: Duration,
}

impl NacosConfig {
    pub fn validate(config: &Value) -> Result<Self, FieldError> {
        let mut f = Fields::new(config)?;
        let version = match f.string("version")?.as_deref() {
            Some("v1") => NacosVersion::V1,
            Some("v2") => NacosVersion::V2,
            None | Some("") => {
                return Err(FieldError::new(field("version"), "required (v1 or v2)"));
            }
            Some(other) => {
                return Err(FieldError::new(
                    field("version"),
                    format!("{other:?} is not one of v1, v2"),
                ));
            }
        };
        let mut server_url = f.server_url("serverUrl")?;
        server_url.port = Some(server_url.port_or(DEFAULT_PORT));
        // HTNN treats an empty namespace or group list as absent.
        let namespace = f
            .string("namespace")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let groups = f
            .string_list("groups")?
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_GROUP.to_string()]);
        let username = f.string("username")?.filter(|s| !s.is_empty());
        let password = f.string("password")?.filter(|s| !s.is_empty());
        if password.is_some() && username.is_none() {
            return Err(FieldError::new(
                field("username"),
                "required when password is set",
            ));
        }
        let service_refresh_interval = f.refresh_interval("serviceRefreshInterval")?;
        f.finish()?;
        Ok(Self {
            version,
            server_url,
            namespace,
            groups,
            username,
            password,
            service_refresh_interval,
        })
    }

    /// [`NacosConfig::validate`] as a [`crate::RegistryType`] validator.
    pub fn validate_erased(config: &Value) -> Result<Config, FieldError> {
        Self::validate(config).map(Config::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        NacosConfig::validate(&v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_htnn() {
        let c =
            NacosConfig::validate(&json!({"version": "v1", "serverUrl": "http://nacos"})).unwrap();
        assert_eq!(c.version, NacosVersion::V1);
        assert_eq!(c.server_url.to_string(), "http://nacos:8848");
        assert_eq!(c.namespace, "public");
        assert_eq!(c.groups, ["DEFAULT_GROUP"]);
        assert_eq!((c.username, c.password), (None, None));
        assert_eq!(c.service_refresh_interval, Duration::from_secs(30));

        let c = NacosConfig::validate(&json!({
            "version": "v2", "serverUrl": "http://10.0.0.1:9848", "namespace": "",
            "groups": [], "username": "nacos", "password": "pw",
            "serviceRefreshInterval": "2s",
        }))
        .unwrap();
        assert_eq!(c.version, NacosVersion::V2);
        assert_eq!(c.server_url.port, Some(9848));
        assert_eq!(c.namespace, "public");
        assert_eq!(c.groups, ["DEFAULT_GROUP"]);
        assert_eq!(c.username.as_deref(), Some("nacos"));
        assert_eq!(c.service_refresh_interval, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err(json!({"serverUrl": "http://n"})),
            "config.version: required (v1 or v2)"
        );
        assert_eq!(
            err(json!({"version": "v3", "serverUrl": "http://n"})),
            "config.version: \"v3\" is not one of v1, v2"
        );
        assert_eq!(err(json!({"version": "v1"})), "config.serverUrl: required");
        assert!(
            err(json!({"version": "v1", "serverUrl": "n:1"})).starts_with("config.serverUrl: ")
        );
        assert_eq!(
            err(
                json!({"version": "v1", "serverUrl": "http://n", "serviceRefreshInterval": "500ms"})
            ),
            "config.serviceRefreshInterval: must be at least 1s"
        );
        assert_eq!(
            err(json!({"version": "v1", "serverUrl": "http://n", "group": ["a"]})),
            "config.group: unknown field"
        );
        assert_eq!(
            err(json!({"version": "v1", "serverUrl": "http://n", "groups": ["a", ""]})),
            "config.groups[1]: must not be empty"
        );
        assert_eq!(
            err(json!({"version": "v1", "serverUrl": "http://n", "password": "x"})),
            "config.username: required when password is set"
        );
    }
}

//! Registry types by name. Nacos and Consul are registered like any third-party type.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::registry::{Registry, Sink};
use crate::{Config, ConsulConfig, FieldError, NacosConfig, RegistryError};

/// Creates a registry for the ServiceRegistry named by the argument (the name goes into
/// every host it produces).
pub type CreateFn = Arc<dyn Fn(&str) -> Box<dyn Registry> + Send + Sync>;

/// One registry type: its `spec.type`, its config validator and its constructor.
#[derive(Clone)]
pub struct RegistryType {
    pub name: String,
    /// Runs before anything starts: an invalid config starts nothing.
    pub validate: fn(&Value) -> Result<Config, FieldError>,
    pub create: CreateFn,
}

impl fmt::Debug for RegistryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryType")
            .field("name", &self.name)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("registry type {0:?} is already registered (use Catalogue::replace to override it)")]
pub struct AlreadyRegistered(pub String);

#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    types: BTreeMap<String, RegistryType>,
}

impl Catalogue {
    /// `nacos` and `consul`. Their clients are not written yet: they validate for real but
    /// fail to start, so the ServiceRegistry reports `Invalid` with a clear reason.
    pub fn builtin() -> Self {
        let mut c = Self::default();
        for (name, validate) in [
            ("nacos", NacosConfig::validate_erased as fn(&Value) -> _),
            ("consul", ConsulConfig::validate_erased),
        ] {
            let create: CreateFn = Arc::new(move |_| Box::new(NotImplemented(name)));
            c.types.insert(
                name.to_string(),
                RegistryType {
                    name: name.to_string(),
                    validate,
                    create,
                },
            );
        }
        c
    }

    /// Adds a type; a name already taken is an error, so a plugin cannot shadow a built-in
    /// by accident.
    pub fn register(&mut self, t: RegistryType) -> Result<(), AlreadyRegistered> {
        if self.types.contains_key(&t.name) {
            return Err(AlreadyRegistered(t.name));
        }
        self.types.insert(t.name.clone(), t);
        Ok(())
    }

    /// Adds or overrides a type on purpose (HTNN allows patching a registry this way);
    /// returns the one replaced.
    pub fn replace(&mut self, t: RegistryType) -> Option<RegistryType> {
        self.types.insert(t.name.clone(), t)
    }

    pub fn get(&self, name: &str) -> Option<&RegistryType> {
        self.types.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Checks a ServiceRegistry's `spec.type` and `spec.config`.
    pub fn validate(
        &self,
        type_name: &str,
        config: &Value,
    ) -> Result<(&RegistryType, Config), FieldError> {
        let t = self.get(type_name).ok_or_else(|| {
            let known: Vec<_> = self.names().collect();
            FieldError::new(
                "type",
                format!(
                    "unknown registry type {type_name:?} (known: {})",
                    known.join(", ")
                ),
            )
        })?;
        Ok((t, (t.validate)(config)?))
    }
}

struct NotImplemented(&'static str);

impl Registry for NotImplemented {
    fn start(&mut self, _: Config, _: Sink) -> BoxFuture<'_, Result<(), RegistryError>> {
        let reason = RegistryError::new(format!("the {} client is not implemented yet", self.0));
        Box::pin(async move { Err(reason) })
    }
    fn reload(&mut self, config: Config) -> BoxFuture<'_, Result<(), RegistryError>> {
        let _ = config;
        self.start(Config::new(()), Sink::new().0)
    }
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

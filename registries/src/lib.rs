//! Service registries (Nacos, Consul) turned into istio ServiceEntries.
//!
//! - [`Catalogue`] maps a ServiceRegistry's `spec.type` to a [`RegistryType`]: a validator
//!   producing a [`Config`] (errors name the field) and a constructor of a [`Registry`].
//! - [`RegistryHandle`] runs each registry in its own task; it publishes its current
//!   host → ServiceEntry set through a `watch` channel, so a hung registry blocks nobody.
//! - [`service_entry::build`] makes the ServiceEntry of one service the way HTNN does;
//!   [`ServiceId::host`] names it.
//! - [`RegistryState`] (soft delete, no-op updates) and [`HostTable`] (all registries
//!   merged, conflicts reported) are pure state.

mod catalogue;
mod config;
mod error;
mod host;
pub mod nacos_v1;
mod registry;
mod runner;
pub mod service_entry;
mod state;

pub use catalogue::{AlreadyRegistered, Catalogue, CreateFn, RegistryType};
pub use config::{
    Config, ConfigValue, ConsulConfig, DEFAULT_REFRESH_INTERVAL, NacosConfig, NacosVersion,
    ServerUrl,
};
pub use error::{FieldError, RegistryError};
pub use host::{HostError, ServiceId};
pub use registry::{Health, Registry, Sink};
pub use runner::{RegistryHandle, Status};
pub use service_entry::{CREATED_BY_LABEL, Instance, Protocol};
pub use state::{Change, Conflict, Entries, HostTable, RegistryState};

#[cfg(test)]
mod tests;

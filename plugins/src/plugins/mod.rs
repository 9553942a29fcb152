//! Plugin implementations, one file each. [`ALL`] is the registry's catalogue.

use crate::registry::Plugin;

pub mod basic_auth;
pub mod consumer_restriction;
pub mod demo;
pub mod key_auth;
pub mod limit_req;
#[cfg(feature = "test-plugins")]
pub mod test_body_hash;
#[cfg(feature = "test-plugins")]
pub mod test_panic;

/// Every registered plugin.
pub static ALL: &[&dyn Plugin] = &[
    &basic_auth::BasicAuth,
    &consumer_restriction::ConsumerRestriction,
    &demo::Demo,
    &key_auth::KeyAuth,
    &limit_req::LimitReq,
    #[cfg(feature = "test-plugins")]
    &test_body_hash::TestBodyHash,
    #[cfg(feature = "test-plugins")]
    &test_panic::TestPanic,
];

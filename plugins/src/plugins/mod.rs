//! Plugin implementations, one file each. [`ALL`] is the registry's catalogue.

use crate::registry::Plugin;

pub mod basic_auth;
pub mod consumer_restriction;
pub mod demo;
pub mod key_auth;
pub mod limit_req;
pub mod test_body_hash;
pub mod test_callout;
pub mod test_panic;

/// Every plugin users can configure.
pub static ALL: &[&dyn Plugin] = &[
    &basic_auth::BasicAuth,
    &consumer_restriction::ConsumerRestriction,
    &demo::Demo,
    &key_auth::KeyAuth,
    &limit_req::LimitReq,
];

/// Plugins that exist only for data-plane tests; see `registry::lookup`.
pub static TEST_ONLY: &[&dyn Plugin] = &[
    &test_body_hash::TestBodyHash,
    &test_callout::TestCallout,
    &test_panic::TestPanic,
];

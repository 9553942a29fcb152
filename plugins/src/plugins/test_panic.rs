//! `testPanic` (test only): panics in `decode_headers`, to prove that a panicking plugin yields a
//! 500 for that request only. Config: `{}`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{self, FieldError};
use crate::filter::{Ctx, Filter, Status};
use crate::registry::{Plugin, PluginConfig};

pub struct TestPanic;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPanicConfig {}

impl Plugin for TestPanic {
    fn name(&self) -> &'static str {
        "testPanic"
    }
    fn response_hooks(&self) -> bool {
        false
    }
    fn parse_config(&self, config: &Value) -> Result<Arc<dyn PluginConfig>, FieldError> {
        let c: TestPanicConfig = config::from_value(config)?;
        Ok(Arc::new(c))
    }
}

impl PluginConfig for TestPanicConfig {
    fn create_filter(self: Arc<Self>) -> Box<dyn Filter> {
        Box::new(PanicFilter)
    }
}

struct PanicFilter;

impl Filter for PanicFilter {
    fn decode_headers(&mut self, _ctx: &mut Ctx<'_>, _end_stream: bool) -> Status {
        panic!("testPanic: deliberate panic in decode_headers");
    }
}

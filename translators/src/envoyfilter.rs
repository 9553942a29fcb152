//! EnvoyFilters that carry the module and plugin configs to the gateways.
//!
//! Envoy-side configs are wrapped in `xds.type.v3.TypedStruct` so istiod validates only the
//! wrapper and passes the content through to Envoy, which converts it with its own
//! descriptors (istio-mcp.md §5.3).

use serde_json::{Value, json};

/// Name of the dynamic module (`libhtnn.so`) and of its HTTP filter in the chain.
pub const MODULE: &str = "htnn";
pub const MAIN_FILTER: &str = "htnn";
/// The filter whose config carries every consumer (delivered by ECDS).
pub const CONSUMER_FILTER: &str = "htnn.consumers";

const FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const PER_ROUTE_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute";

fn typed_struct(type_url: &str, value: Value) -> Value {
    json!({"@type": "type.googleapis.com/xds.type.v3.TypedStruct", "type_url": type_url, "value": value})
}

/// Module configs travel as a JSON string in a `google.protobuf.StringValue`, which Envoy hands
/// to the module as raw bytes.
fn string_value(config_json: String) -> Value {
    json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config_json})
}

pub fn filter_config(filter_name: &str, config: &Value) -> Value {
    filter_config_json(filter_name, config.to_string())
}

/// [`filter_config`] with the config already serialized.
pub fn filter_config_json(filter_name: &str, config_json: String) -> Value {
    typed_struct(
        FILTER_TYPE,
        json!({
            "dynamic_module_config": {"name": MODULE, "do_not_close": true},
            "filter_name": filter_name,
            "filter_config": string_value(config_json),
        }),
    )
}

/// `config_json`: the route's chain, already serialized.
pub fn per_route_config(config_json: &str) -> Value {
    typed_struct(
        PER_ROUTE_TYPE,
        json!({
            "dynamic_module_config": {"name": MODULE, "do_not_close": true},
            "filter_name": MAIN_FILTER,
            "filter_config": string_value(config_json.to_string()),
        }),
    )
}

fn before_router() -> Value {
    json!({"context": "GATEWAY", "listener": {"filterChain": {"filter": {
        "name": "envoy.filters.network.http_connection_manager",
        "subFilter": {"name": "envoy.filters.http.router"}}}}})
}

/// The static part, always served so that policies come and go without listener changes:
/// the plugin filter, disabled unless a route enables it, and the consumer carrier, fed by
/// ECDS.
pub fn base_spec() -> Value {
    json!({
        "priority": -10,
        "configPatches": [
            {"applyTo": "HTTP_FILTER", "match": before_router(), "patch": {"operation": "INSERT_BEFORE", "value": {
                "name": CONSUMER_FILTER,
                // Only its config matters (Envoy still creates and updates it); disabled, it
                // costs nothing per request.
                "disabled": true,
                "config_discovery": {
                    "config_source": {"ads": {}},
                    "default_config": filter_config(CONSUMER_FILTER, &json!({})),
                    "apply_default_config_without_warming": true,
                    "type_urls": [FILTER_TYPE],
                },
            }}},
            {"applyTo": "HTTP_FILTER", "match": before_router(), "patch": {"operation": "INSERT_BEFORE", "value": {
                "name": MAIN_FILTER,
                "disabled": true,
                "typed_config": filter_config(MAIN_FILTER, &json!({"plugins": []})),
            }}},
        ],
    })
}

/// The ECDS resource holding every consumer (`consumers_json`: the carrier document).
pub fn consumers_spec(consumers_json: String) -> Value {
    json!({
        "configPatches": [{"applyTo": "EXTENSION_CONFIG", "patch": {"operation": "ADD", "value": {
            "name": CONSUMER_FILTER,
            "typed_config": filter_config_json(CONSUMER_FILTER, consumers_json),
        }}}],
    })
}

/// One `HTTP_ROUTE` MERGE per Envoy route name, enabling the plugin filter with its chain.
pub fn routes_spec(routes: &[(String, String)]) -> Value {
    let patches: Vec<Value> = routes
        .iter()
        .map(|(route, chain)| {
            json!({
                "applyTo": "HTTP_ROUTE",
                "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"route": {"name": route}}}},
                "patch": {"operation": "MERGE", "value": {"typed_per_filter_config": {MAIN_FILTER: per_route_config(chain)}}},
            })
        })
        .collect();
    json!({"configPatches": patches})
}

/// [`routes_spec`] built as the protobuf message directly, encoded: the per-VirtualService
/// EnvoyFilters are most of what translation produces, and going through JSON and the spec
/// parser cost more than everything else. A test checks both give the same bytes.
pub fn routes_body(routes: &[(String, String)]) -> Vec<u8> {
    use ef::route_configuration_match::{RouteMatch, VirtualHostMatch};
    use htnn_proto::istio::networking::v1alpha3::{EnvoyFilter, envoy_filter as ef};
    use htnn_proto::wkt::Struct;
    use prost::Message;

    let config_patches = routes
        .iter()
        .map(|(route, chain)| {
            let value = json!({"typed_per_filter_config": {MAIN_FILTER: per_route_config(chain)}});
            let serde_json::Value::Object(value) = value else {
                unreachable!("a JSON object literal")
            };
            ef::EnvoyConfigObjectPatch {
                apply_to: ef::ApplyTo::HttpRoute as i32,
                r#match: Some(ef::EnvoyConfigObjectMatch {
                    context: ef::PatchContext::Gateway as i32,
                    proxy: None,
                    object_types: Some(
                        ef::envoy_config_object_match::ObjectTypes::RouteConfiguration(
                            ef::RouteConfigurationMatch {
                                vhost: Some(VirtualHostMatch {
                                    route: Some(RouteMatch {
                                        name: route.clone(),
                                        action: 0,
                                    }),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ),
                    ),
                }),
                patch: Some(ef::Patch {
                    operation: ef::patch::Operation::Merge as i32,
                    value: Some(Struct::from(value)),
                    filter_class: 0,
                }),
            }
        })
        .collect();
    EnvoyFilter {
        config_patches,
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_body_is_what_the_spec_parser_makes_of_routes_spec() {
        let routes = vec![
            ("a".to_string(), r#"{"plugins":[]}"#.to_string()),
            (
                "b.m".to_string(),
                r#"{"namespace":"ns","plugins":[{"config":{"k":1},"name":"keyAuth"}]}"#.to_string(),
            ),
        ];
        let kind = crate::kinds::istio_kind(crate::ISTIO_NETWORKING, "EnvoyFilter").unwrap();
        assert_eq!(
            routes_body(&routes),
            kind.parse(routes_spec(&routes)).unwrap()
        );
        assert_eq!(routes_body(&[]), kind.parse(routes_spec(&[])).unwrap());
    }
}

//! Data-plane tests: the real Envoy 1.40.0 loads the `libhtnn.so` cargo built and serves
//! requests on loopback through the htnn plugins.
//!
//! Needs Envoy 1.40.0 (`<workspace>/.venv/bin/envoy` or `$ENVOY_BIN`) and `libhtnn.so`
//! (`$HTNN_MODULE_DIR`, default: this test binary's `target/<profile>` dir). Missing either is a
//! failure, never a skip.

mod support;

use std::time::{Duration, Instant};

use htnn_plugins::plugins::test_body_hash::sha256_hex;
use serde_json::{Value, json};
use support::{EchoBackend, Envoy, free_port, get, request, validate};

const DM_FILTER: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const DM_PER_ROUTE: &str = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
const TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";

/// `filter_config` carried as a StringValue holding JSON (what a static config would use).
fn string_value(doc: &Value) -> Value {
    json!({"@type": STRING_VALUE, "value": doc.to_string()})
}

/// `filter_config` carried as a TypedStruct (what we hand to istiod, which does not know our type).
fn typed_struct(doc: &Value) -> Value {
    json!({"@type": TYPED_STRUCT, "type_url": "type.googleapis.com/htnn.FilterConfig", "value": doc})
}

fn module() -> Value {
    json!({"name": "htnn", "do_not_close": true})
}

/// A route to the echo backend with an htnn per-route chain.
fn route(name: &str, prefix: &str, chain: Option<Value>) -> Value {
    let mut r = json!({
        "name": name,
        "match": {"prefix": prefix},
        "route": {"cluster": "backend", "timeout": "10s"},
    });
    if let Some(filter_config) = chain {
        r["typed_per_filter_config"] = json!({"htnn": {
            "@type": DM_PER_ROUTE,
            "dynamic_module_config": module(),
            "filter_name": "htnn",
            "filter_config": filter_config,
        }});
    }
    r
}

fn chain(namespace: &str, plugins: Value) -> Value {
    json!({"namespace": namespace, "plugins": plugins})
}

fn consumers() -> Value {
    json!({
        "ns1": {
            "rick": {"auth": {"keyAuth": {"key": "rick-key"}}},
            "morty": {"auth": {"keyAuth": {"key": "morty-key"}, "basicAuth": {"username": "morty", "password": "s3cret"}}},
        },
        "ns2": {"summer": {"auth": {"keyAuth": {"key": "summer-key"}}}}
    })
}

fn http_filters(htnn_disabled_by_default: bool) -> Value {
    let mut htnn = json!({
        "name": "htnn",
        "typed_config": {
            "@type": DM_FILTER,
            "dynamic_module_config": module(),
            "filter_name": "htnn",
            // Gateway-level chain: the demo plugin adds `x-gateway-demo: hello, <guest>`.
            "filter_config": string_value(&chain("ns1", json!([
                {"name": "demo", "config": {"hostName": "x-gateway-demo"}}
            ]))),
        }
    });
    if htnn_disabled_by_default {
        htnn["disabled"] = json!(true);
    }
    json!([
        {
            "name": "htnn.consumers",
            "typed_config": {
                "@type": DM_FILTER,
                "dynamic_module_config": module(),
                "filter_name": "htnn.consumers",
                "filter_config": string_value(&consumers()),
            }
        },
        htnn,
        {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    ])
}

fn listener(name: &str, port: u16, routes: Value, htnn_disabled_by_default: bool) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                "http_filters": http_filters(htnn_disabled_by_default),
            }
        }]}]
    })
}

/// A listener whose only module filter is the `htnn.selftest` diagnostic filter.
fn selftest_listener(port: u16) -> Value {
    json!({
        "name": "selftest",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "selftest",
                "route_config": {"name": "selftest", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route("st", "/", None)]}]},
                "http_filters": [
                    {"name": "htnn.selftest", "typed_config": {
                        "@type": DM_FILTER,
                        "dynamic_module_config": module(),
                        "filter_name": "htnn.selftest",
                    }},
                    {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                ],
            }
        }]}]
    })
}

/// Ports of one gateway: `main` runs the htnn filter on every route (gateway-level chain
/// plus per-route chains); `opt_in` has the filter disabled by default and enabled per route;
/// `selftest` runs the ABI self-test filter.
struct Ports {
    main: u16,
    opt_in: u16,
    selftest: u16,
    admin: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            main: free_port(),
            opt_in: free_port(),
            selftest: free_port(),
            admin: free_port(),
        }
    }
}

fn bootstrap(backend: u16, ports: &Ports) -> Value {
    let main_routes = json!([
        route("plain", "/plain", None),
        route("override", "/override", Some(string_value(&chain("ns1", json!([
            {"name": "demo", "config": {"hostName": "x-route-demo"}}
        ]))))),
        route("typed", "/typed", Some(typed_struct(&chain("ns1", json!([
            {"name": "demo", "config": {"hostName": "x-gateway-demo"}},
            {"name": "demo2-is-unknown-and-dropped"}
        ]))))),
        {
            "name": "off",
            "match": {"prefix": "/off"},
            "route": {"cluster": "backend"},
            "typed_per_filter_config": {"htnn": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}}
        },
        route("key", "/key", Some(string_value(&chain("ns1", json!([
            {"name": "keyAuth", "config": {"keys": [{"name": "x-api-key"}, {"name": "apikey", "source": "QUERY"}]}},
            {"name": "consumerRestriction", "config": {"allow": {"rules": [{"name": "rick"}]}}}
        ]))))),
        route("basic", "/basic", Some(string_value(&chain("ns1", json!([
            {"name": "basicAuth", "config": {}},
            {"name": "consumerRestriction", "config": {"denyIfNoConsumer": true}}
        ]))))),
        route("limit", "/limit", Some(string_value(&chain("ns1", json!([
            {"name": "limitReq", "config": {"average": 1, "period": "60s", "burst": 2}}
        ]))))),
        route("limit-delay", "/delay", Some(string_value(&chain("ns1", json!([
            {"name": "limitReq", "config": {"average": 1, "period": "1s", "burst": 1}}
        ]))))),
        route("panic", "/panic", Some(string_value(&chain("ns1", json!([
            {"name": "testPanic", "config": {}}
        ]))))),
        route("body", "/body", Some(string_value(&chain("ns1", json!([
            {"name": "testBodyHash", "config": {"response": true}}
        ]))))),
        route("callout-unknown", "/callout-unknown", Some(string_value(&chain("ns1", json!([
            {"name": "testCallout", "config": {"cluster": "no-such-cluster", "path": "/answer"}}
        ]))))),
        route("callout-dead", "/callout-dead", Some(string_value(&chain("ns1", json!([
            {"name": "testCallout", "config": {"cluster": "dead", "path": "/answer"}}
        ]))))),
        route("callout", "/callout", Some(string_value(&chain("ns1", json!([
            {"name": "testCallout", "config": {"cluster": "backend", "path": "/answer"}}
        ]))))),
        route("default", "/", None),
    ]);
    let opt_in_routes = json!([
        route(
            "enabled",
            "/enabled",
            Some(string_value(&chain(
                "ns1",
                json!([
                    {"name": "demo", "config": {"hostName": "x-route-demo"}}
                ])
            )))
        ),
        route("not-enabled", "/", None),
    ]);
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "static_resources": {
            "listeners": [
                listener("main", ports.main, main_routes, false),
                listener("opt_in", ports.opt_in, opt_in_routes, true),
                selftest_listener(ports.selftest),
            ],
            "clusters": [{
                "name": "backend",
                "connect_timeout": "1s",
                "type": "STATIC",
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": backend}}}}
                ]}]}
            }, {
                // Nothing listens there: connections are refused.
                "name": "dead",
                "connect_timeout": "1s",
                "type": "STATIC",
                "load_assignment": {"cluster_name": "dead", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}}}
                ]}]}
            }]
        }
    })
}

/// Envoy + echo backend, both stopped on drop.
struct Gateway {
    envoy: Envoy,
    ports: Ports,
    _backend: EchoBackend,
}

impl Gateway {
    fn start() -> Gateway {
        let backend = EchoBackend::start();
        let ports = Ports::new();
        let envoy = Envoy::start(&bootstrap(backend.port, &ports), ports.admin);
        Gateway {
            envoy,
            ports,
            _backend: backend,
        }
    }
}

#[test]
fn validate_mode_loads_module_and_rejects_bad_config() {
    let ports = Ports::new();
    let good = bootstrap(free_port(), &ports);
    let (ok, out) = validate(&good);
    assert!(ok, "envoy --mode validate failed:\n{out}");
    assert!(
        out.contains("Dynamic module ABI version v0.2.0 matched"),
        "no ABI match log:\n{out}"
    );

    // A malformed chain document makes `config_new` return NULL: Envoy must reject the config.
    let mut bad = good.clone();
    bad["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        [1]["typed_config"]["filter_config"] =
        json!({"@type": STRING_VALUE, "value": "{\"plugins\": 7}"});
    let (ok, out) = validate(&bad);
    assert!(!ok, "a malformed gateway chain was accepted:\n{out}");

    // Same for a per-route config.
    let mut bad = good;
    bad["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"][1]["typed_per_filter_config"]["htnn"]["filter_config"] =
        json!({"@type": STRING_VALUE, "value": "not json"});
    let (ok, out) = validate(&bad);
    assert!(!ok, "a malformed per-route chain was accepted:\n{out}");
}

#[test]
fn gateway_and_per_route_chains() {
    let gw = Gateway::start();
    let p = gw.ports.main;

    // Gateway-level chain applies to a route without per-route config.
    let r = get(p, "/plain", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-x-gateway-demo"),
        Some("hello, guest"),
        "{r:?}"
    );

    // Per-route chain: its `demo` replaces the gateway's `demo` (route wins per plugin).
    let r = get(p, "/override", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-x-route-demo"),
        Some("hello, guest"),
        "{r:?}"
    );
    assert_eq!(r.header("x-echo-h-x-gateway-demo"), None, "{r:?}");

    // TypedStruct-carried config arrives as JSON too; the unknown plugin is dropped, not fatal.
    let r = get(p, "/typed", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-x-gateway-demo"),
        Some("hello, guest"),
        "{r:?}"
    );

    // Filter disabled on the route: the module is not invoked at all.
    let r = get(p, "/off", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-echo-h-x-gateway-demo"), None, "{r:?}");

    // Filter disabled by default on the listener, enabled by a per-route config.
    let r = get(gw.ports.opt_in, "/enabled", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-x-route-demo"),
        Some("hello, guest"),
        "{r:?}"
    );
    assert_eq!(r.header("x-echo-h-x-gateway-demo"), None, "{r:?}");
    let r = get(gw.ports.opt_in, "/other", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-x-gateway-demo"),
        None,
        "disabled-by-default filter ran: {r:?}"
    );

    assert!(
        gw.envoy
            .stat("dynamicmodulescustom.htnn_requests_total")
            .unwrap_or(0)
            >= 4,
        "{}",
        gw.envoy.log()
    );
}

#[test]
fn key_auth_and_consumer_restriction() {
    let gw = Gateway::start();
    let p = gw.ports.main;

    // No key: keyAuth lets it pass without a consumer, consumerRestriction answers 401.
    let r = get(p, "/key", &[]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert!(r.text().contains("consumer not found"), "{r:?}");

    let r = get(p, "/key", &[("x-api-key", "wrong")]);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.text().contains("invalid key"), "{r:?}");

    // A consumer of another namespace does not match.
    let r = get(p, "/key", &[("x-api-key", "summer-key")]);
    assert_eq!(r.status, 401, "{r:?}");

    // Allowed consumer: 200, the credential is stripped, the consumer is visible to later plugins
    // (the gateway-level demo greets it).
    let r = get(p, "/key", &[("x-api-key", "rick-key")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-echo-h-x-api-key"), None, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-x-gateway-demo"),
        Some("hello, rick"),
        "{r:?}"
    );

    // Key in the query string; it is removed from the upstream path.
    let r = get(p, "/key/q?apikey=rick-key&x=1", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-echo-path"), Some("/key/q?x=1"), "{r:?}");

    // Authenticated but not allowed: 403.
    let r = get(p, "/key", &[("x-api-key", "morty-key")]);
    assert_eq!(r.status, 403, "{r:?}");
}

/// The carrier's streams pass through, so it may be `disabled: true`: Envoy still hands a
/// disabled-by-default filter its config (the consumers get installed) but then creates no
/// per-stream instance of it, which saves a filter's worth of work on every request.
#[test]
fn consumer_carrier_works_disabled_by_default() {
    let backend = EchoBackend::start();
    let ports = Ports::new();
    let mut config = bootstrap(backend.port, &ports);
    let mut carriers = 0;
    for listener in config["static_resources"]["listeners"]
        .as_array_mut()
        .expect("listeners")
    {
        let filters =
            &mut listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
        for f in filters.as_array_mut().expect("http_filters") {
            if f["name"] == "htnn.consumers" {
                f["disabled"] = json!(true);
                carriers += 1;
            }
        }
    }
    assert_eq!(carriers, 2, "every carrier is disabled");
    let _envoy = Envoy::start(&config, ports.admin);
    let r = get(ports.main, "/key", &[("x-api-key", "rick-key")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-x-gateway-demo"),
        Some("hello, rick"),
        "{r:?}"
    );
    assert_eq!(
        get(ports.main, "/key", &[("x-api-key", "wrong")]).status,
        401
    );
}

#[test]
fn basic_auth() {
    let gw = Gateway::start();
    let p = gw.ports.main;
    let basic = |user_pass: &str| format!("Basic {}", base64(user_pass.as_bytes()));

    let r = get(p, "/basic", &[]);
    assert_eq!(r.status, 401, "{r:?}");

    let r = get(p, "/basic", &[("authorization", &basic("morty:wrong"))]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"htnn\""),
        "{r:?}"
    );

    let r = get(p, "/basic", &[("authorization", &basic("morty:s3cret"))]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-echo-h-authorization"),
        None,
        "credential forwarded: {r:?}"
    );
    assert_eq!(
        r.header("x-echo-h-x-gateway-demo"),
        Some("hello, morty"),
        "{r:?}"
    );
}

#[test]
fn limit_req_rejects_after_burst_and_delays_within_max_delay() {
    let gw = Gateway::start();
    let p = gw.ports.main;

    // burst 2, 1 per minute: two pass, the third is rejected.
    assert_eq!(get(p, "/limit", &[]).status, 200);
    assert_eq!(get(p, "/limit", &[]).status, 200);
    let r = get(p, "/limit", &[]);
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.text().contains("too many requests"), "{r:?}");

    // 1 per second, burst 1 (max delay 500 ms): a request ~700 ms after the first needs ~300 ms
    // more and is delayed (async resume through Envoy's scheduler), not rejected.
    assert_eq!(get(p, "/delay", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(700));
    let start = Instant::now();
    let r = get(p, "/delay", &[]);
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        took >= Duration::from_millis(100),
        "request was not delayed ({took:?})"
    );
    // Right after, the next token is a second away: rejected.
    assert_eq!(get(p, "/delay", &[]).status, 429);
}

#[test]
fn panicking_plugin_answers_500_and_envoy_keeps_serving() {
    let mut gw = Gateway::start();
    let p = gw.ports.main;
    for _ in 0..3 {
        let r = get(p, "/panic", &[]);
        assert_eq!(r.status, 500, "{r:?}");
        let r = get(p, "/plain", &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(gw.envoy.alive(), "envoy died:\n{}", gw.envoy.log());
    assert!(
        gw.envoy
            .stat("dynamicmodulescustom.htnn_local_replies_total")
            .unwrap_or(0)
            >= 3
    );
    assert!(
        gw.envoy.log().contains("testPanic"),
        "panic not logged through Envoy:\n{}",
        gw.envoy.log()
    );
}

#[test]
fn plugin_callout_through_envoy() {
    let mut gw = Gateway::start();
    let p = gw.ports.main;
    for _ in 0..3 {
        // The plugin asks the backend (GET /answer) and forwards its answer as a request header.
        let r = get(p, "/callout", &[]);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-echo-path"), Some("/callout"), "{r:?}");
        assert_eq!(r.header("x-echo-h-x-callout-result"), Some("42"), "{r:?}");
        // A request body is held during the callout and then forwarded intact.
        let r = request(p, "POST", "/callout", &[], b"hello");
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{r:?}");
        assert_eq!(r.header("x-echo-h-x-callout-result"), Some("42"), "{r:?}");
        // A callout to a cluster that refuses connections: the plugin answers 503.
        let r = get(p, "/callout-dead", &[]);
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.text(), r#"{"msg":"callout failed"}"#, "{r:?}");
        assert_eq!(r.header("x-echo-path"), None, "{r:?}");
        // Envoy refuses to start a callout to an unknown cluster: the plugin resumes at once.
        let r = get(p, "/callout-unknown", &[]);
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.text(), r#"{"msg":"callout failed"}"#, "{r:?}");
    }
    assert!(gw.envoy.alive(), "envoy died:\n{}", gw.envoy.log());
    assert!(
        gw.envoy.log().contains("cluster not found"),
        "start failure not logged:\n{}",
        gw.envoy.log()
    );
}

#[test]
fn whole_body_plugin_passes_one_mib_intact() {
    let gw = Gateway::start();
    let body: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let hash = sha256_hex(&body);
    let r = request(
        gw.ports.main,
        "POST",
        "/body",
        &[("content-type", "application/octet-stream")],
        &body,
    );
    assert_eq!(r.status, 200, "status {} headers {:?}", r.status, r.headers);
    // The plugin saw the whole body (request headers it set reached the backend) ...
    assert_eq!(
        r.header("x-echo-h-x-htnn-body-length"),
        Some("1048576"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.header("x-echo-h-x-htnn-body-sha256"),
        Some(hash.as_str()),
        "{:?}",
        r.headers
    );
    // ... the backend got it intact (it echoes it) ...
    assert_eq!(r.header("x-echo-body-len"), Some("1048576"));
    assert!(r.body == body, "echoed body differs (len {})", r.body.len());
    // ... and the whole echoed response went through `encode_response` too.
    assert_eq!(
        r.header("x-htnn-body-sha256"),
        Some(hash.as_str()),
        "{:?}",
        r.headers
    );

    // 1 MiB is exactly Envoy's default per-connection buffer limit; a bigger body cannot be
    // buffered for a whole-body plugin and Envoy answers 413 itself.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let r = request(gw.ports.main, "POST", "/body", &[], &big);
    assert_eq!(r.status, 413, "status {} headers {:?}", r.status, r.headers);
    assert_eq!(get(gw.ports.main, "/plain", &[]).status, 200);
}

/// Calls, through the `htnn.selftest` filter, the Envoy callbacks the plugins above do not
/// exercise: catches drift in our hand-written declarations (Envoy does not check prototypes).
#[test]
fn abi_selftest_callbacks_behave() {
    let gw = Gateway::start();
    let p = gw.ports.selftest;
    for (method, body) in [("POST", &b"hello"[..]), ("GET", &b""[..])] {
        let r = request(p, method, "/st", &[("content-type", "text/plain")], body);
        assert_eq!(r.status, 200, "{method}: {r:?}");
        let h = |name: &str| {
            r.header(&format!("x-echo-h-x-selftest-{name}"))
                .unwrap_or("<missing>")
                .to_owned()
        };
        assert_eq!(h("added"), "a, b", "add_header: {r:?}");
        assert_eq!(h("saw-added"), "2", "get_headers: {r:?}");
        assert!(
            h("header-count").parse::<usize>().is_ok_and(|n| n >= 6),
            "get_headers_size: {r:?}"
        );
        assert_eq!(h("filter-state"), "fs-value", "filter state: {r:?}");
        assert_eq!(h("metadata"), "md-value", "dynamic metadata: {r:?}");
        assert!(
            h("worker").parse::<u32>().is_ok_and(|w| w < 2),
            "worker index: {r:?}"
        );
        assert!(
            h("source-port").parse::<u16>().is_ok_and(|p| p > 0),
            "attribute_int: {r:?}"
        );
        assert_eq!(h("route"), "st", "attribute_string(route_name): {r:?}");
        assert!(h("callout").starts_with("0 200 "), "http callout: {r:?}");
        // Body replaced through drain/append, content-length kept truthful.
        if method == "POST" {
            assert_eq!(r.text(), "selftest:hello", "{r:?}");
            assert_eq!(r.header("x-echo-body-len"), Some("14"), "{r:?}");
        }
        // Response stopped, woken from another thread via the scheduler, continue_encoding.
        assert_eq!(r.header("x-selftest-response"), Some("yes"), "{r:?}");
        assert_eq!(r.header("x-selftest-resumed"), Some("event 7"), "{r:?}");
    }
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

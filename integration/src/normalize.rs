//! Comparing an object as written with what istiod's `/debug/configz` prints.
//!
//! configz renders the stored proto with golang/protobuf `jsonpb` (camelCase names,
//! `EmitDefaults: false`, enums as names). Relative to what a user writes that means:
//!
//! - proto3 scalars at their default (`false`, `0`, `""`), empty lists/maps/messages and enum
//!   fields at their zero value are omitted (oneof members and wrapper types such as
//!   `BoolValue` are printed even at their default);
//! - `google.protobuf.Duration` prints as seconds with 0, 3, 6 or 9 decimals: `1m30s` → `"90s"`,
//!   `100ms` → `"0.100s"`;
//! - 64-bit integers print as strings: `minimumRingSize: 1024` → `"1024"`;
//! - doubles print in Go's shortest form (`50.0` → `50`);
//! - wrapper types (`BoolValue`, `Int32Value`, …) are printed whenever set, even at their
//!   default: `allowCredentials: false` stays `false`, unlike a plain `bool`;
//! - `google.protobuf.Struct` values (EnvoyFilter patches, Wasm plugin config) are passed
//!   through as JSON unchanged.
//!
//! [`normalize_spec`] applies exactly those canonicalisations to both sides; anything else
//! that differs is a real difference.

use serde_json::{Map, Value};

/// Fields of type `google.protobuf.Duration` in the istio APIs served over MCP (camelCase).
/// A string in such a field is compared as a number of nanoseconds.
pub const DURATION_FIELDS: &[&str] = &[
    "backoff",
    "baseEjectionTime",
    "connectTimeout",
    "duration",
    "exponentialDelay",
    "fixedDelay",
    "idleTimeout",
    "interval",
    "maxAge",
    "maxConnectionDuration",
    "perTryTimeout",
    "reportingInterval",
    "time",
    "timeout",
    "ttl",
    "warmupDurationSecs",
];

/// `uint64`/`int64` fields, printed as JSON strings by jsonpb.
pub const INT64_FIELDS: &[&str] = &["minimumRingSize", "tableSize"];

/// `(field, value)` pairs where `value` is the zero value of the field's enum: written by
/// users, omitted by jsonpb (unless the field is a oneof member).
pub const ENUM_ZERO_VALUES: &[(&str, &str)] = &[
    ("action", "ALLOW"),        // AuthorizationPolicy.action
    ("action", "ANY"),          // EnvoyFilter RouteMatch.action
    ("applyTo", "INVALID"),     // EnvoyFilter
    ("captureMode", "DEFAULT"), // Sidecar
    ("context", "ANY"),         // EnvoyFilter PatchContext
    ("derivePort", "FROM_PROTOCOL_DEFAULT"),
    ("failStrategy", "FAIL_CLOSE"), // WasmPlugin / TrafficExtension
    ("filterClass", "UNSPECIFIED"), // EnvoyFilter Patch
    ("h2UpgradePolicy", "DEFAULT"), // DestinationRule
    ("imagePullPolicy", "UNSPECIFIED_POLICY"),
    ("location", "MESH_EXTERNAL"), // ServiceEntry
    ("maxProtocolVersion", "TLS_AUTO"),
    ("metric", "ALL_METRICS"), // Telemetry MetricSelector
    ("minProtocolVersion", "TLS_AUTO"),
    ("mode", "CLIENT_AND_SERVER"),  // Telemetry WorkloadMode
    ("mode", "DISABLE"),            // DestinationRule ClientTLSSettings
    ("mode", "PASSTHROUGH"),        // Gateway ServerTLSSettings
    ("mode", "REGISTRY_ONLY"),      // Sidecar OutboundTrafficPolicy
    ("mode", "UNDEFINED"),          // istio.type WorkloadMode (WasmPlugin/TrafficExtension)
    ("mode", "UNSET"),              // PeerAuthentication
    ("operation", "INVALID"),       // EnvoyFilter Patch
    ("operation", "UPSERT"),        // Telemetry TagOverride
    ("phase", "UNSPECIFIED"),       // TrafficExtension
    ("phase", "UNSPECIFIED_PHASE"), // WasmPlugin
    ("resolution", "NONE"),         // ServiceEntry
    ("simple", "UNSPECIFIED"),      // DestinationRule LoadBalancer
    ("type", "UNSPECIFIED_PLUGIN_TYPE"),
    ("unmatchedPreflights", "UNSPECIFIED"),
    ("valueFrom", "INLINE"), // WasmPlugin EnvVar
    ("version", "V1"),       // DestinationRule ProxyProtocol
];

/// Wrapper-typed fields (`google.protobuf.BoolValue` etc.) per kind: set means printed,
/// even at the default value, so an explicit `false`/`0` must survive the round trip.
fn wrapper_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "VirtualService" => &[
            "allowCredentials",
            "mirrorPercent",
            "retryIgnorePreviousHosts",
            "retryRemoteLocalities",
        ],
        "DestinationRule" => &[
            "aggression",
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "consecutiveLocalOriginFailures",
            "enabled",
            "insecureSkipVerify",
            "minimumPercent",
            "percent",
        ],
        "Telemetry" => &[
            "disableContextPropagation",
            "disableSpanReporting",
            "disabled",
            "enableIstioTags",
            "randomSamplingPercentage",
            "useRequestIdForTraceSampling",
        ],
        "ProxyConfig" => &["concurrency"],
        "WasmPlugin" | "TrafficExtension" => &["priority"],
        _ => &[],
    }
}

/// Fields holding a `google.protobuf.Struct` (compared verbatim), per kind.
fn struct_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        // configPatches[].patch.value
        "EnvoyFilter" => &["value"],
        "WasmPlugin" | "TrafficExtension" => &["pluginConfig"],
        _ => &[],
    }
}

#[derive(Clone, Copy)]
struct Ctx {
    wrappers: &'static [&'static str],
    structs: &'static [&'static str],
}

/// Canonical form of the spec of an object of `kind`: see the module docs. A spec that is
/// entirely default becomes `null`.
pub fn normalize_spec(kind: &str, spec: &Value) -> Value {
    let ctx = Ctx {
        wrappers: wrapper_fields(kind),
        structs: struct_fields(kind),
    };
    norm(spec, None, ctx).unwrap_or(Value::Null)
}

/// Canonical form of a value with no kind-specific rules (labels, annotations, tests).
pub fn normalize(value: &Value) -> Value {
    norm(
        value,
        None,
        Ctx {
            wrappers: &[],
            structs: &[],
        },
    )
    .unwrap_or(Value::Null)
}

fn norm(value: &Value, key: Option<&str>, ctx: Ctx) -> Option<Value> {
    if let Some(k) = key {
        if ctx.structs.contains(&k) && value.is_object() {
            return Some(value.clone());
        }
        if ctx.wrappers.contains(&k) {
            match value {
                Value::Bool(b) => return Some(Value::Bool(*b)),
                Value::Number(n) => return n.as_f64().map(number),
                _ => {}
            }
        }
    }
    match value {
        Value::Null | Value::Bool(false) => None,
        Value::Bool(true) => Some(Value::Bool(true)),
        Value::Number(n) => {
            let f = n.as_f64()?;
            if f == 0.0 { None } else { Some(number(f)) }
        }
        Value::String(s) => {
            if s.is_empty() {
                return None;
            }
            if let Some(k) = key {
                if DURATION_FIELDS.contains(&k)
                    && let Some(ns) = parse_duration_nanos(s)
                {
                    return (ns != 0).then(|| Value::String(format!("{ns}ns")));
                }
                if INT64_FIELDS.contains(&k)
                    && let Ok(i) = s.parse::<i64>()
                {
                    return (i != 0).then(|| number(i as f64));
                }
                if ENUM_ZERO_VALUES.contains(&(k, s.as_str())) {
                    return None;
                }
            }
            Some(Value::String(s.clone()))
        }
        Value::Array(items) => {
            if items.is_empty() {
                return None;
            }
            // Positions matter: an all-default element stays as an empty object/null.
            Some(Value::Array(
                items
                    .iter()
                    .map(|v| {
                        norm(v, key, ctx).unwrap_or_else(|| match v {
                            Value::Object(_) => Value::Object(Map::new()),
                            _ => Value::Null,
                        })
                    })
                    .collect(),
            ))
        }
        Value::Object(map) => {
            let out: Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| norm(v, Some(k), ctx).map(|v| (k.clone(), v)))
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
    }
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

/// Nanoseconds of a Go-style duration (`1h2m3.5s`, `100ms`, `1us`, `0`), which also covers
/// protobuf JSON's `"90.000s"` form. `None` if the text is not a duration.
pub fn parse_duration_nanos(text: &str) -> Option<i128> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        total = total.checked_add(int.checked_mul(unit)?)?;
        // Fraction: exact for up to 18 digits, truncated like Go beyond that.
        let digits: String = frac_part.chars().take(18).collect();
        if !digits.is_empty() {
            let scale = 10i128.pow(digits.len() as u32);
            let frac: i128 = digits.parse().ok()?;
            total = total.checked_add(frac * unit / scale)?;
        }
    }
    Some(if negative { -total } else { total })
}

/// Differences between two normalised values, one line per difference, each starting with
/// the JSON path (`spec.http[0].timeout`) under `root`.
pub fn diff(root: &str, expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at(root, expected, actual, &mut out);
    out
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        let cut: String = s.chars().take(200).collect();
        format!("{cut}…")
    } else {
        s
    }
}

fn child_path(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if simple {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    } else {
        format!("{path}[{}]", Value::String(key.to_string()))
    }
}

/// A map entry or list element that may be on either side only.
fn diff_member(
    path: &str,
    expected: Option<&Value>,
    actual: Option<&Value>,
    out: &mut Vec<String>,
) {
    match (expected, actual) {
        (Some(ev), Some(av)) => diff_at(path, ev, av, out),
        (Some(ev), None) => out.push(format!(
            "{path}: missing in istiod (expected {})",
            short(ev)
        )),
        (None, Some(av)) => out.push(format!(
            "{path}: not in the input (istiod has {})",
            short(av)
        )),
        (None, None) => {}
    }
}

fn diff_at(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let mut keys: Vec<&String> = e.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                diff_member(&child_path(path, k), e.get(k), a.get(k), out);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for i in 0..e.len().max(a.len()) {
                diff_member(&format!("{path}[{i}]"), e.get(i), a.get(i), out);
            }
        }
        (e, a) if e == a => {}
        (e, a) => out.push(format!(
            "{path}: expected {}, istiod has {}",
            short(e),
            short(a)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_nanos("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_nanos("90s"), Some(90_000_000_000));
        assert_eq!(parse_duration_nanos("0.100s"), Some(100_000_000));
        assert_eq!(parse_duration_nanos("100ms"), Some(100_000_000));
        assert_eq!(parse_duration_nanos("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration_nanos("2us"), Some(2_000));
        assert_eq!(parse_duration_nanos("0s"), Some(0));
        assert_eq!(parse_duration_nanos("0"), Some(0));
        assert_eq!(parse_duration_nanos("-1.5h"), Some(-5_400_000_000_000));
        assert_eq!(parse_duration_nanos("5 minutes"), None);
        assert_eq!(parse_duration_nanos("s"), None);
        assert_eq!(parse_duration_nanos("10"), None);
        assert_eq!(parse_duration_nanos(""), None);
    }

    #[test]
    fn user_form_equals_configz_form() {
        let written = json!({
            "http": [{"timeout": "1m30s", "retries": {"attempts": 3, "perTryTimeout": "100ms"},
                      "match": [{"ignoreUriCase": false}], "mirrorPercentage": {"value": 50.0}}],
            "tls": {"mode": "DISABLE", "credentialName": ""},
            "exportTo": [],
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"ringHash": {"minimumRingSize": 1024}}}},
        });
        let configz = json!({
            "http": [{"timeout": "90s", "retries": {"attempts": 3, "perTryTimeout": "0.100s"},
                      "match": [{}], "mirrorPercentage": {"value": 50}}],
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"ringHash": {"minimumRingSize": "1024"}}}},
        });
        assert_eq!(
            diff("spec", &normalize(&written), &normalize(&configz)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn real_differences_are_reported_with_paths() {
        let written = json!({"http": [{"timeout": "5m", "name": "a"}], "hosts": ["x"]});
        let configz = json!({"http": [{"timeout": "300.001s"}], "hosts": ["x", "y"],
                             "gateways": ["mesh"]});
        let d = diff("spec", &normalize(&written), &normalize(&configz));
        assert_eq!(
            d,
            vec![
                "spec.gateways: not in the input (istiod has [\"mesh\"])".to_string(),
                "spec.hosts[1]: not in the input (istiod has \"y\")".to_string(),
                "spec.http[0].name: missing in istiod (expected \"a\")".to_string(),
                "spec.http[0].timeout: expected \"300000000000ns\", istiod has \"300001000000ns\""
                    .to_string(),
            ]
        );
    }

    #[test]
    fn odd_keys_are_quoted() {
        let d = diff(
            "metadata.labels",
            &json!({"app.kubernetes.io/name": "a"}),
            &json!({}),
        );
        assert_eq!(
            d,
            vec!["metadata.labels[\"app.kubernetes.io/name\"]: missing in istiod (expected \"a\")"]
        );
    }

    #[test]
    fn wrappers_keep_their_defaults_and_structs_are_verbatim() {
        let vs = json!({"http": [{"corsPolicy": {"allowCredentials": false, "maxAge": "0s"}}]});
        assert_eq!(
            normalize_spec("VirtualService", &vs),
            json!({"http": [{"corsPolicy": {"allowCredentials": false}}]})
        );
        // The same name is a plain int32 in an EnvoyFilter.
        assert_eq!(
            normalize_spec("WasmPlugin", &json!({"priority": 0})),
            json!({"priority": 0})
        );
        assert_eq!(
            normalize_spec("EnvoyFilter", &json!({"priority": 0})),
            Value::Null
        );
        let ef = json!({"configPatches": [{"patch": {"operation": "MERGE",
                        "value": {"disabled": false, "timeout": "1m", "n": 0}}}]});
        assert_eq!(
            normalize_spec("EnvoyFilter", &ef),
            json!({"configPatches": [{"patch": {"operation": "MERGE",
                   "value": {"disabled": false, "timeout": "1m", "n": 0}}}]})
        );
    }

    #[test]
    fn duration_names_do_not_touch_other_strings() {
        // A header value that looks like a duration is not a Duration field.
        let v = normalize(&json!({"set": {"x-delay": "1m"}, "timeout": "1m"}));
        assert_eq!(
            v,
            json!({"set": {"x-delay": "1m"}, "timeout": "60000000000ns"})
        );
    }
}

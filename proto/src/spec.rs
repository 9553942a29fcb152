//! Parse a Kubernetes-style `spec` (as users write it in YAML) into a generated message.
//!
//! istio decodes CRD specs with `github.com/golang/protobuf/jsonpb`, which is proto3 JSON plus
//! a few leniencies. pbjson (our serde impls) already accepts most of what jsonpb accepts:
//! `lowerCamel` and `snake_case` field names, integers as numbers or strings (also 64-bit
//! ones), enums by name or number, wrapper types as bare values, `"NaN"`/`"Infinity"`. What it
//! does not accept, this module normalises first, walking the JSON alongside the message
//! descriptor from [`crate::FILE_DESCRIPTOR_SET`]:
//!
//! - `google.protobuf.Duration` written Go-style (`5m`, `1h30m`, `1.5s`, `100ms`, `2us`, `10ns`,
//!   `0`; jsonpb uses `time.ParseDuration`) becomes proto3 JSON seconds (`300s`). Strings
//!   already in proto3 form (`300s`, `0.5s`) are left as they are.
//! - `null` as a field value means "unset" (removed); `null` as a list element or map value
//!   means the type's default value (jsonpb does both).
//!
//! `google.protobuf.Struct`/`Value`/`ListValue`/`Any` subtrees are left alone.
//!
//! Unlike istio (which drops unknown fields), unknown fields are an error here: a typo in a
//! user's spec should be reported, not silently ignored. Errors carry the path of the
//! offending value in the style `spec.http[0].route[0].destination.hostt`.

#![warn(clippy::all)]

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Path prefix used by [`parse`] and [`normalize`] for the top-level object.
pub const ROOT: &str = "spec";

/// A spec that does not parse into the requested message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SpecError {
    /// Where the problem is, e.g. `spec.http[0].timeout`.
    pub path: String,
    /// What is wrong, e.g. `invalid duration "5x": unknown unit "x"`.
    pub reason: String,
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET is produced by build.rs and always decodes")
});

/// Descriptors of every message in this crate (and the well-known types they use).
pub fn descriptor_pool() -> &'static DescriptorPool {
    &POOL
}

/// Parses `spec` into `T`, whose protobuf full name is `full_name`
/// (e.g. `"istio.networking.v1alpha3.VirtualService"`). Error paths start with `spec`.
pub fn parse<T: DeserializeOwned>(full_name: &str, spec: Value) -> Result<T, SpecError> {
    parse_at(ROOT, full_name, spec)
}

/// Like [`parse`], for types that implement [`prost::Name`] (needs
/// `prost_build::Config::enable_type_names()` in the build script).
pub fn parse_named<T: DeserializeOwned + prost::Name>(spec: Value) -> Result<T, SpecError> {
    parse_at(ROOT, &T::full_name(), spec)
}

/// Like [`parse`], with error paths starting at `root` instead of `spec`
/// (e.g. `"spec.plugins[2].config"`; empty for bare paths).
pub fn parse_at<T: DeserializeOwned>(
    root: &str,
    full_name: &str,
    mut value: Value,
) -> Result<T, SpecError> {
    normalize_at(root, full_name, &mut value)?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.path().to_string();
        let path = if inner == "." {
            root.to_string()
        } else {
            join(root, &inner)
        };
        SpecError {
            path,
            reason: err.into_inner().to_string(),
        }
    })
}

/// Rewrites `value` in place into the proto3 JSON that pbjson accepts (see the module docs),
/// without deserializing it. Errors only for values that cannot be normalised (bad durations);
/// unknown fields and type mismatches are left for the deserializer to report.
pub fn normalize(full_name: &str, value: &mut Value) -> Result<(), SpecError> {
    normalize_at(ROOT, full_name, value)
}

fn normalize_at(root: &str, full_name: &str, value: &mut Value) -> Result<(), SpecError> {
    let Some(md) = POOL.get_message_by_name(full_name) else {
        return Err(SpecError {
            path: root.to_string(),
            reason: format!("unknown message type {full_name:?}"),
        });
    };
    // jsonpb treats a top-level null as an empty message.
    if value.is_null() && md.full_name() != "google.protobuf.Value" {
        *value = Value::Object(serde_json::Map::new());
    }
    let mut path = root.to_string();
    walk_message(&md, value, &mut path)
}

/// Serializes a generated message to proto3 JSON (`lowerCamel` names, defaults omitted),
/// e.g. for debug output.
pub fn to_json<T: Serialize + ?Sized>(message: &T) -> serde_json::Result<Value> {
    serde_json::to_value(message)
}

/// Parses a Go `time.ParseDuration` string (`"1h30m"`, `"-1.5s"`, `"100ms"`, `"2µs"`, `"0"`)
/// into nanoseconds, with Go's rules: a sequence of decimal numbers, each with an optional
/// fraction and a unit out of `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`, optionally signed;
/// the result must fit in an `i64` of nanoseconds. The error is the reason only.
pub fn parse_go_duration(input: &str) -> Result<i64, String> {
    const INVALID: &str =
        "expected decimal numbers with units (ns, us, ms, s, m, h), e.g. \"1h30m\" or \"300ms\"";
    const LIMIT: u64 = 1 << 63;

    let (neg, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(INVALID.to_string());
    }
    let overflow = || "out of range (more than about 292 years)".to_string();
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(INVALID.to_string());
        }
        // Integer part.
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &c in &b[..int_len] {
            whole = whole
                .checked_mul(10)
                .and_then(|x| x.checked_add(u64::from(c - b'0')))
                .filter(|&x| x <= LIMIT)
                .ok_or_else(overflow)?;
        }
        s = &s[int_len..];
        // Fraction: digits beyond u64 precision are ignored, as in Go.
        let (mut frac, mut scale, mut frac_len) = (0u64, 1f64, 0usize);
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            frac_len = s.bytes().take_while(u8::is_ascii_digit).count();
            let mut full = false;
            for c in s[..frac_len].bytes() {
                if full {
                    continue;
                }
                match frac
                    .checked_mul(10)
                    .and_then(|x| x.checked_add(u64::from(c - b'0')))
                {
                    Some(x) if x <= LIMIT => {
                        frac = x;
                        scale *= 10.0;
                    }
                    _ => full = true,
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(INVALID.to_string());
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err("missing unit (ns, us, ms, s, m, h)".to_string());
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit {other:?} (expected ns, us, ms, s, m or h)"
                ));
            }
        };
        let mut v = whole
            .checked_mul(unit)
            .filter(|&x| x <= LIMIT)
            .ok_or_else(overflow)?;
        if frac > 0 {
            // Same float computation as Go (nanosecond-accurate up to hours).
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let extra = (frac as f64 * (unit as f64 / scale)) as u64;
            v = v
                .checked_add(extra)
                .filter(|&x| x <= LIMIT)
                .ok_or_else(overflow)?;
        }
        total = total
            .checked_add(v)
            .filter(|&x| x <= LIMIT)
            .ok_or_else(overflow)?;
    }
    if neg {
        // total <= 2^63, so -total fits.
        Ok(0i64.wrapping_sub_unsigned(total))
    } else {
        i64::try_from(total).map_err(|_| overflow())
    }
}

/// proto3 JSON form of a duration: `[-]<seconds>[.<fraction>]s` with at most 9 fraction digits.
fn is_proto_duration(s: &str) -> bool {
    let Some(body) = s.strip_suffix('s') else {
        return false;
    };
    let body = body.strip_prefix('-').unwrap_or(body);
    let (secs, frac) = match body.split_once('.') {
        Some((secs, frac)) => (secs, Some(frac)),
        None => (body, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    digits(secs) && frac.is_none_or(|f| digits(f) && f.len() <= 9)
}

fn normalize_duration(value: &mut Value, path: &str) -> Result<(), SpecError> {
    let Value::String(s) = value else {
        return Ok(());
    };
    if is_proto_duration(s) {
        return Ok(());
    }
    let nanos = parse_go_duration(s).map_err(|reason| SpecError {
        path: path.to_string(),
        reason: format!("invalid duration {s:?}: {reason}"),
    })?;
    let duration = pbjson_types::Duration {
        seconds: nanos / 1_000_000_000,
        #[allow(clippy::cast_possible_truncation)]
        nanos: (nanos % 1_000_000_000) as i32,
    };
    // Seconds and nanos share a sign, so this always serializes.
    if let Ok(v) = serde_json::to_value(duration) {
        *value = v;
    }
    Ok(())
}

fn join(base: &str, segment: &str) -> String {
    if base.is_empty() || segment.starts_with('[') {
        format!("{base}{segment}")
    } else {
        format!("{base}.{segment}")
    }
}

fn field_for(md: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    md.get_field_by_json_name(key)
        .or_else(|| md.get_field_by_name(key))
}

/// Whether `null` is a real value for this field (rather than "unset").
fn null_is_value(field: &FieldDescriptor) -> bool {
    !field.is_list()
        && match field.kind() {
            Kind::Message(m) => m.full_name() == "google.protobuf.Value",
            Kind::Enum(e) => e.full_name() == "google.protobuf.NullValue",
            _ => false,
        }
}

fn walk_message(
    md: &MessageDescriptor,
    value: &mut Value,
    path: &mut String,
) -> Result<(), SpecError> {
    let name = md.full_name();
    if name == "google.protobuf.Duration" {
        return normalize_duration(value, path);
    }
    if name.starts_with("google.protobuf.") {
        // Struct/Value/ListValue/Any, wrappers, Timestamp, ...: pbjson's own JSON forms.
        return Ok(());
    }
    let Value::Object(map) = value else {
        return Ok(());
    };
    map.retain(|key, v| !v.is_null() || field_for(md, key).is_none_or(|f| null_is_value(&f)));
    for (key, v) in map.iter_mut() {
        let Some(field) = field_for(md, key) else {
            continue;
        };
        let len = path.len();
        path.push('.');
        path.push_str(key);
        walk_field(&field, v, path)?;
        path.truncate(len);
    }
    Ok(())
}

fn walk_field(
    field: &FieldDescriptor,
    value: &mut Value,
    path: &mut String,
) -> Result<(), SpecError> {
    if field.is_map() {
        let (Kind::Message(entry), Value::Object(map)) = (field.kind(), value) else {
            return Ok(());
        };
        let kind = entry.map_entry_value_field().kind();
        for (key, v) in map.iter_mut() {
            let len = path.len();
            path.push('.');
            path.push_str(key);
            walk_element(&kind, v, path)?;
            path.truncate(len);
        }
        Ok(())
    } else if field.is_list() {
        let Value::Array(items) = value else {
            return Ok(());
        };
        let kind = field.kind();
        for (i, v) in items.iter_mut().enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            walk_element(&kind, v, path)?;
            path.truncate(len);
        }
        Ok(())
    } else if let Kind::Message(md) = field.kind() {
        walk_message(&md, value, path)
    } else {
        Ok(())
    }
}

/// A list element or map value: `null` stands for the default value.
fn walk_element(kind: &Kind, value: &mut Value, path: &mut String) -> Result<(), SpecError> {
    if value.is_null() {
        if let Some(default) = default_json(kind) {
            *value = default;
        }
        return Ok(());
    }
    match kind {
        Kind::Message(md) => walk_message(md, value, path),
        _ => Ok(()),
    }
}

/// The JSON pbjson accepts for the default value of `kind`; `None` where `null` is already
/// right (Value, NullValue) or there is no sensible default (Any).
fn default_json(kind: &Kind) -> Option<Value> {
    Some(match kind {
        Kind::Bool => Value::Bool(false),
        Kind::String | Kind::Bytes => Value::String(String::new()),
        Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => return None,
        Kind::Enum(_) => Value::from(0),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Value" | "google.protobuf.Any" => return None,
            "google.protobuf.Duration" => Value::from("0s"),
            "google.protobuf.Timestamp" => Value::from("1970-01-01T00:00:00Z"),
            "google.protobuf.FieldMask" => Value::from(""),
            "google.protobuf.ListValue" => Value::Array(Vec::new()),
            "google.protobuf.BoolValue" => Value::Bool(false),
            "google.protobuf.StringValue" | "google.protobuf.BytesValue" => Value::from(""),
            "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue" => Value::from(0),
            _ => Value::Object(serde_json::Map::new()),
        },
        // Every numeric kind.
        _ => Value::from(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::extensions::v1alpha1::{TrafficExtension, WasmPlugin, traffic_extension};
    use crate::istio::networking::v1alpha3::{DestinationRule, VirtualService};
    use crate::istio::networking::v1beta1::ProxyConfig;
    use crate::istio::security::v1beta1::{
        AuthorizationPolicy, PeerAuthentication, RequestAuthentication, authorization_policy,
        peer_authentication::mutual_tls::Mode,
    };
    use crate::istio::telemetry::v1alpha1::{Telemetry, metric_selector, metrics_overrides};
    use pbjson_types::Duration;
    use serde_json::json;

    const RA: &str = "istio.security.v1beta1.RequestAuthentication";
    const AP: &str = "istio.security.v1beta1.AuthorizationPolicy";
    const TEL: &str = "istio.telemetry.v1alpha1.Telemetry";
    const VS: &str = "istio.networking.v1alpha3.VirtualService";

    fn d(seconds: i64, nanos: i32) -> Option<Duration> {
        Some(Duration { seconds, nanos })
    }

    fn jwt_timeout(t: Value) -> Result<Option<Duration>, SpecError> {
        let ra: RequestAuthentication =
            parse(RA, json!({"jwtRules": [{"issuer": "i", "timeout": t}]}))?;
        Ok(ra.jwt_rules[0].timeout)
    }

    #[test]
    fn go_durations() {
        let cases = [
            ("0", 0),
            ("-0", 0),
            ("5m", 300_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5s", 1_500_000_000),
            ("100ms", 100_000_000),
            ("2us", 2_000),
            ("2µs", 2_000),
            ("2μs", 2_000),
            ("10ns", 10),
            ("-1.5h", -5_400_000_000_000),
            ("+5s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("1h1m1s1ms1us1ns", 3_661_001_001_001),
            ("0.5h", 1_800_000_000_000),
            ("1.0000000019s", 1_000_000_001),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_duration(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "-",
            "5",
            "5x",
            "s",
            ".s",
            "1 s",
            "1h 30m",
            "2562047h47m16.854775808s",
            "99999999999999999999s",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(
            parse_go_duration("5x")
                .unwrap_err()
                .contains("unknown unit \"x\"")
        );
        assert!(parse_go_duration("5").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn durations_in_spec() {
        assert_eq!(jwt_timeout(json!("5m")).unwrap(), d(300, 0));
        assert_eq!(jwt_timeout(json!("1h30m")).unwrap(), d(5400, 0));
        assert_eq!(jwt_timeout(json!("1.5s")).unwrap(), d(1, 500_000_000));
        assert_eq!(jwt_timeout(json!("100ms")).unwrap(), d(0, 100_000_000));
        assert_eq!(jwt_timeout(json!("2us")).unwrap(), d(0, 2_000));
        assert_eq!(jwt_timeout(json!("10ns")).unwrap(), d(0, 10));
        assert_eq!(jwt_timeout(json!("0")).unwrap(), d(0, 0));
        assert_eq!(jwt_timeout(json!("-1.5s")).unwrap(), d(-1, -500_000_000));
        assert_eq!(jwt_timeout(json!("300s")).unwrap(), d(300, 0));
        assert_eq!(jwt_timeout(json!("0.000000001s")).unwrap(), d(0, 1));
        // More than 9 fraction digits is not proto3 JSON but is a valid Go duration.
        assert_eq!(jwt_timeout(json!("1.0000000019s")).unwrap(), d(1, 1));
        // Beyond Go's range but valid proto3 JSON: left alone.
        assert_eq!(
            jwt_timeout(json!("315576000000s")).unwrap(),
            d(315_576_000_000, 0)
        );
    }

    #[test]
    fn normalize_rewrites_in_place() {
        let mut v =
            json!({"jwtRules": [{"timeout": "1h30m"}, {"timeout": "300s"}, {"timeout": "1.25s"}]});
        normalize(RA, &mut v).unwrap();
        assert_eq!(
            v,
            json!({"jwtRules": [{"timeout": "5400s"}, {"timeout": "300s"}, {"timeout": "1.25s"}]})
        );
        let mut v = json!({"jwt_rules": [{"timeout": "90ms"}]});
        normalize(RA, &mut v).unwrap();
        assert_eq!(v, json!({"jwt_rules": [{"timeout": "0.090s"}]}));
    }

    #[test]
    fn bad_duration_path() {
        let err = jwt_timeout(json!("5x")).unwrap_err();
        assert_eq!(err.path, "spec.jwtRules[0].timeout");
        assert!(
            err.to_string()
                .starts_with("spec.jwtRules[0].timeout: invalid duration \"5x\": unknown unit"),
            "{err}"
        );
        // Not a string: reported by the deserializer, same path style.
        let err = jwt_timeout(json!(5)).unwrap_err();
        assert_eq!(err.path, "spec.jwtRules[0].timeout", "{err}");
        // Map values: Telemetry metrics → overrides → tagOverrides is a map, durations sit in metrics.
        let err = parse::<Telemetry>(TEL, json!({"metrics": [{}, {"reportingInterval": "1x"}]}))
            .unwrap_err();
        assert_eq!(err.path, "spec.metrics[1].reportingInterval");
    }

    #[test]
    fn unknown_field_paths() {
        let err = parse::<AuthorizationPolicy>(
            AP,
            json!({"rules": [{"from": [{"source": {"principals": ["a"]}}, {"source": {"principalz": ["b"]}}]}]}),
        )
        .unwrap_err();
        assert_eq!(err.path, "spec.rules[0].from[1].source.principalz", "{err}");
        assert!(err.reason.contains("unknown field `principalz`"), "{err}");

        let err = parse::<Telemetry>(
            TEL,
            json!({"tracing": [{"customTags": {"env": {"literal": {"valu": "x"}}}}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.path, "spec.tracing[0].customTags.env.literal.valu",
            "{err}"
        );

        let err = parse::<AuthorizationPolicy>(AP, json!({"selectr": {}})).unwrap_err();
        assert_eq!(err.path, "spec.selectr");

        let err = parse::<AuthorizationPolicy>(
            AP,
            json!({"rules": [{"to": [{"operation": {"ports": [80]}}]}]}),
        )
        .unwrap_err();
        assert_eq!(err.path, "spec.rules[0].to[0].operation.ports[0]", "{err}");

        let err = parse::<AuthorizationPolicy>(AP, json!([])).unwrap_err();
        assert_eq!(err.path, "spec");

        let err =
            parse_at::<AuthorizationPolicy>("", AP, json!({"rules": [{"when": [{"kee": "x"}]}]}))
                .unwrap_err();
        assert_eq!(err.path, "rules[0].when[0].kee");

        let err = parse::<AuthorizationPolicy>("istio.Nope", json!({})).unwrap_err();
        assert_eq!(err.path, "spec");
    }

    #[test]
    fn enums_by_name_or_number_and_oneofs() {
        let ap: AuthorizationPolicy = parse(
            AP,
            json!({"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{}]}),
        )
        .unwrap();
        assert_eq!(ap.action(), authorization_policy::Action::Custom);
        assert_eq!(
            ap.action_detail,
            Some(authorization_policy::ActionDetail::Provider(
                authorization_policy::ExtensionProvider {
                    name: "ext-authz".into()
                }
            ))
        );
        let ap: AuthorizationPolicy = parse(AP, json!({"action": 1})).unwrap();
        assert_eq!(ap.action(), authorization_policy::Action::Deny);
        assert!(parse::<AuthorizationPolicy>(AP, json!({"action": "deny"})).is_err());

        let pa: PeerAuthentication = parse(
            "istio.security.v1beta1.PeerAuthentication",
            json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}, "9090": {"mode": 2}}}),
        )
        .unwrap();
        assert_eq!(pa.mtls.unwrap().mode(), Mode::Strict);
        assert_eq!(pa.port_level_mtls[&8080].mode(), Mode::Disable);
        assert_eq!(pa.port_level_mtls[&9090].mode(), Mode::Permissive);

        let tel: Telemetry = parse(
            TEL,
            json!({"metrics": [{"overrides": [{
                "match": {"metric": "REQUEST_COUNT", "mode": "SERVER"},
                "tagOverrides": {"x": {"operation": "REMOVE"}, "y": {"value": "request.host"}}
            }]}]}),
        )
        .unwrap();
        let o = &tel.metrics[0].overrides[0];
        assert_eq!(
            o.r#match.as_ref().unwrap().metric_match,
            Some(metric_selector::MetricMatch::Metric(
                metric_selector::IstioMetric::RequestCount as i32
            ))
        );
        assert_eq!(
            o.tag_overrides["x"].operation(),
            metrics_overrides::tag_override::Operation::Remove
        );
        assert_eq!(o.tag_overrides["y"].value, "request.host");
    }

    #[test]
    fn numbers_as_strings_and_wrappers() {
        let pc: ProxyConfig = parse(
            "istio.networking.v1beta1.ProxyConfig",
            json!({"concurrency": "4", "image": {"imageType": "distroless"}}),
        )
        .unwrap();
        assert_eq!(pc.concurrency.map(|c| c.value), Some(4));
        let tel: Telemetry = parse(
            TEL,
            json!({"tracing": [{"randomSamplingPercentage": 12.5, "disableSpanReporting": true}]}),
        )
        .unwrap();
        assert_eq!(
            tel.tracing[0].random_sampling_percentage.map(|p| p.value),
            Some(12.5)
        );
        assert_eq!(
            tel.tracing[0].disable_span_reporting.map(|b| b.value),
            Some(true)
        );

        // uint64 as string and as number.
        let dr_name = "istio.networking.v1alpha3.DestinationRule";
        for v in [json!("1024"), json!(1024)] {
            let dr: DestinationRule = parse(
                dr_name,
                json!({"host": "h", "trafficPolicy": {"loadBalancer": {"consistentHash": {
                    "httpHeaderName": "x-user", "ringHash": {"minimumRingSize": v}}}}}),
            )
            .unwrap();
            let json = to_json(&dr).unwrap();
            assert_eq!(
                json["trafficPolicy"]["loadBalancer"]["consistentHash"]["ringHash"]["minimumRingSize"],
                json!("1024")
            );
        }
    }

    #[test]
    fn nulls() {
        // null field = unset; null list element = default.
        let ra: RequestAuthentication = parse(
            RA,
            json!({"selector": null, "jwtRules": [{"issuer": null, "audiences": ["a", null], "timeout": null}, null]}),
        )
        .unwrap();
        assert!(ra.selector.is_none());
        assert_eq!(ra.jwt_rules.len(), 2);
        assert_eq!(
            ra.jwt_rules[0].audiences,
            vec!["a".to_string(), String::new()]
        );
        assert_eq!(ra.jwt_rules[0].timeout, None);
        let ra: RequestAuthentication = parse(RA, Value::Null).unwrap();
        assert_eq!(ra, RequestAuthentication::default());
    }

    #[test]
    fn struct_subtrees_untouched() {
        let config = json!({"timeout": "5m", "nested": {"interval": "1h", "unknownField": null}, "list": [1.5, "2s"]});
        let wp: WasmPlugin = parse(
            "istio.extensions.v1alpha1.WasmPlugin",
            json!({"url": "oci://x", "pluginConfig": config, "imagePullPolicy": "IfNotPresent",
                   "phase": "AUTHZ", "priority": 10, "match": [{"mode": "SERVER", "ports": [{"number": 80}]}],
                   "vmConfig": {"env": [{"name": "A", "valueFrom": "HOST"}]}}),
        )
        .unwrap();
        assert_eq!(to_json(&wp).unwrap()["pluginConfig"], config);

        let te: TrafficExtension = parse(
            "istio.extensions.v1alpha1.TrafficExtension",
            json!({"phase": "STATS", "wasm": {"url": "oci://y", "pluginConfig": config, "failStrategy": "FAIL_OPEN"}}),
        )
        .unwrap();
        let Some(traffic_extension::FilterConfig::Wasm(wasm)) = &te.filter_config else {
            panic!("{te:?}")
        };
        assert_eq!(wasm.url, "oci://y");
        assert_eq!(to_json(&te).unwrap()["wasm"]["pluginConfig"], config);
    }

    #[test]
    fn virtual_service() {
        let vs: VirtualService = parse(
            VS,
            json!({
                "hosts": ["a.example.com"],
                "http": [
                    {"route": [{"destination": {"host": "a"}}]},
                    {
                        "timeout": "1h30m",
                        "retries": {"attempts": "3", "perTryTimeout": "100ms", "retryOn": "5xx"},
                        "match": [{"headers": {"x-env": {"exact": "prod"}}, "uri": {"prefix": "/api"}}],
                        "route": [{"destination": {"host": "b", "port": {"number": 8080}}, "weight": 100}]
                    }
                ]
            }),
        )
        .unwrap();
        let http = &vs.http[1];
        assert_eq!(http.timeout, d(5400, 0));
        let retries = http.retries.as_ref().unwrap();
        assert_eq!(retries.attempts, 3);
        assert_eq!(retries.per_try_timeout, d(0, 100_000_000));
        assert_eq!(http.route[0].destination.as_ref().unwrap().host, "b");

        let err = parse::<VirtualService>(
            VS,
            json!({"http": [{"route": [{"destination": {"hostt": "a"}}]}]}),
        )
        .unwrap_err();
        assert_eq!(err.path, "spec.http[0].route[0].destination.hostt", "{err}");
        assert!(err.to_string().contains("unknown field `hostt`"), "{err}");

        let err =
            parse::<VirtualService>(VS, json!({"http": [{}, {"timeout": "5x"}]})).unwrap_err();
        assert_eq!(err.path, "spec.http[1].timeout");
        assert!(
            err.to_string()
                .starts_with("spec.http[1].timeout: invalid duration \"5x\": "),
            "{err}"
        );

        // Map value path (headers is map<string, StringMatch>).
        let err = parse::<VirtualService>(
            VS,
            json!({"http": [{"match": [{"headers": {"x-env": {"exakt": "prod"}}}]}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.path, "spec.http[0].match[0].headers.x-env.exakt",
            "{err}"
        );
    }
}

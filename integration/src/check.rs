//! Checks of what istiod holds against what was written.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::corpus::ObjectKey;
use crate::env::Istiod;
use crate::normalize::{diff, normalize, normalize_spec};
use crate::poll_until;

/// Differences between an object as written and istiod's configz entry for it: the spec,
/// plus `metadata.labels` and `metadata.annotations`. Empty when they match.
///
/// Besides jsonpb's canonical form (see [`crate::normalize`]) one istiod quirk is accepted:
/// building a push context rewrites a DestinationRule's short `spec.host` **in the stored
/// object** to `<host>.<namespace>` (`PushContext.setDestinationRules` assigns
/// `rule.Host = ResolveShortnameToFQDN(...)` on the store's own proto; over MCP the domain
/// suffix is empty). So after istiod's first push, configz shows `reviews.default` for
/// `host: reviews`. That is istiod mutating its store, not a change in transit.
pub fn compare(written: &Value, configz_entry: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let undone;
    let configz_entry = match undo_istiod_host_resolution(written, configz_entry) {
        Some(v) => {
            undone = v;
            &undone
        }
        None => configz_entry,
    };
    let kind = written
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for (path, pointer) in [
        ("spec", "/spec"),
        ("metadata.labels", "/metadata/labels"),
        ("metadata.annotations", "/metadata/annotations"),
    ] {
        let canonical = |v: &Value| {
            if path == "spec" {
                normalize_spec(kind, v)
            } else {
                normalize(v)
            }
        };
        let expected = canonical(written.pointer(pointer).unwrap_or(&Value::Null));
        let actual = canonical(configz_entry.pointer(pointer).unwrap_or(&Value::Null));
        match (&expected, &actual) {
            (Value::Null, Value::Null) => {}
            (Value::Null, a) => out.push(format!("{path}: not in the input (istiod has {a})")),
            (e, Value::Null) => out.push(format!("{path}: missing in istiod (expected {e})")),
            (e, a) => out.extend(diff(path, e, a)),
        }
    }
    out
}

/// See [`compare`]: a copy of `entry` with a DestinationRule host that istiod expanded from
/// the short name in `written` put back, or `None` if there is nothing to undo.
fn undo_istiod_host_resolution(written: &Value, entry: &Value) -> Option<Value> {
    if written.get("kind")?.as_str()? != "DestinationRule" {
        return None;
    }
    let short = written.pointer("/spec/host")?.as_str()?;
    if short.contains('.') || short == "*" {
        return None;
    }
    let namespace = written
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if entry.pointer("/spec/host")?.as_str()? != format!("{short}.{namespace}") {
        return None;
    }
    let mut copy = entry.clone();
    *copy.pointer_mut("/spec/host")? = Value::from(short);
    Some(copy)
}

/// The keys of `expected` that `configz` does not have.
pub fn missing<'a>(
    expected: impl IntoIterator<Item = &'a ObjectKey>,
    configz: &BTreeMap<ObjectKey, Value>,
) -> Vec<ObjectKey> {
    expected
        .into_iter()
        .filter(|k| !configz.contains_key(k))
        .cloned()
        .collect()
}

/// Waits until istiod holds `key` matching `written` (see [`compare`]); returns how long it
/// took. The error says what was still different at the deadline.
pub async fn wait_for_object(
    istiod: &Istiod,
    key: &ObjectKey,
    written: &Value,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let (_, took) = poll_until(timeout, Duration::from_millis(25), || async {
        let configz = istiod.configz().await?;
        Ok(match configz.get(key) {
            None => Err(format!("{key} is not in configz")),
            Some(entry) => {
                let d = compare(written, entry);
                if d.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{key} differs: {}", d.join("; ")))
                }
            }
        })
    })
    .await?;
    Ok(took)
}

/// Waits until istiod no longer holds `key`.
pub async fn wait_for_absence(
    istiod: &Istiod,
    key: &ObjectKey,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let (_, took) = poll_until(timeout, Duration::from_millis(25), || async {
        let configz = istiod.configz().await?;
        Ok(if configz.contains_key(key) {
            Err(format!("{key} is still in configz"))
        } else {
            Ok(())
        })
    })
    .await?;
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn destination_rule_short_host_expanded_by_istiod_is_accepted() {
        let written = json!({"kind": "DestinationRule", "metadata": {"name": "r", "namespace": "team-a"},
                             "spec": {"host": "reviews"}});
        let expanded = json!({"kind": "DestinationRule", "metadata": {"name": "r", "namespace": "team-a"},
                              "spec": {"host": "reviews.team-a"}});
        assert!(compare(&written, &expanded).is_empty());
        assert!(compare(&written, &written).is_empty());
        let other = json!({"kind": "DestinationRule", "metadata": {"name": "r", "namespace": "team-a"},
                           "spec": {"host": "reviews.default"}});
        assert_eq!(compare(&written, &other).len(), 1);
    }
}

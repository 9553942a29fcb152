//! Consumers: validated one by one when they change, merged per namespace (names are
//! unique per namespace) into the consumer carrier document (see `htnn_plugins::consumer`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::jsontext;
use crate::model::{Object, ObjectRef};
use crate::{Status, policy};

/// One Consumer as validated on its own, before names are checked across consumers.
#[derive(Clone)]
pub(crate) struct ConsumerState {
    pub obj: Arc<Object>,
    pub created: (i64, i32),
    /// Data-plane name and carrier entry (compact JSON), or why the consumer is invalid.
    pub entry: Result<(String, Arc<str>), String>,
}

impl ConsumerState {
    pub fn new(obj: Arc<Object>) -> Self {
        let entry = consumer_entry(&obj.id, &obj.spec_json())
            .map(|(name, entry)| (name, Arc::from(entry.to_string())));
        Self {
            created: crate::created(&obj),
            obj,
            entry,
        }
    }
}

/// One namespace's part of the carrier document (`None` without valid consumers) and the
/// status of each of its `consumers`. With `last_valid`, a consumer whose current version is
/// invalid is served in its last valid version, if that differs (see
/// [`crate::Options::keep_last_valid`]), and `last_valid` is updated.
pub(crate) fn namespace_doc(
    consumers: &BTreeMap<ObjectRef, ConsumerState>,
    last_valid: Option<&mut BTreeMap<ObjectRef, ConsumerState>>,
) -> (Option<String>, BTreeMap<ObjectRef, Status>) {
    let (doc, mut statuses) = merge(consumers.values());
    let fallbacks: Vec<&ObjectRef> = match last_valid.as_deref() {
        Some(lv) => statuses
            .iter()
            .filter(|(id, s)| {
                s.reason == crate::Reason::Invalid
                    && lv.get(*id).is_some_and(|l| l.obj != consumers[*id].obj)
            })
            .map(|(id, _)| id)
            .collect(),
        None => Vec::new(),
    };
    let doc = if fallbacks.is_empty() {
        doc
    } else {
        let lv = last_valid.as_deref().expect("fallbacks need last_valid");
        let served = consumers
            .iter()
            .map(|(id, c)| if fallbacks.contains(&id) { &lv[id] } else { c });
        let (doc, second) = merge(served);
        let mut final_statuses = second;
        for id in &fallbacks {
            let mut s = statuses[*id].clone();
            s.message.push_str(crate::LAST_VALID_SUFFIX);
            final_statuses.insert((*id).clone(), s);
        }
        statuses = final_statuses;
        doc
    };
    if let Some(lv) = last_valid {
        lv.retain(|id, _| consumers.contains_key(id));
        for (id, s) in &statuses {
            if s.reason != crate::Reason::Invalid {
                let c = &consumers[id];
                if lv.get(id).is_none_or(|l| l.obj != c.obj) {
                    lv.insert(id.clone(), c.clone());
                }
            }
        }
    }
    (doc, statuses)
}

/// Merges one namespace's consumers, as compact JSON (`{name: entry}`, keys sorted, as
/// serde_json writes a map): of two with the same data-plane name, the older one wins. Built
/// from each consumer's entry serialized once: a JSON tree of thousands of consumers would
/// cost more than everything else a change does.
fn merge<'a>(
    consumers: impl Iterator<Item = &'a ConsumerState>,
) -> (Option<String>, BTreeMap<ObjectRef, Status>) {
    let mut sorted: Vec<&ConsumerState> = consumers.collect();
    sorted.sort_by(|a, b| (a.created, &a.obj.id).cmp(&(b.created, &b.obj.id)));
    // All of one namespace: data-plane name -> entry.
    let mut doc: BTreeMap<&str, &str> = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for c in sorted {
        let id = &c.obj.id;
        let generation = c.obj.meta.generation;
        let status = match &c.entry {
            Ok((name, entry)) => {
                if doc.contains_key(name.as_str()) {
                    Status::invalid(
                        generation,
                        format!(
                            "duplicate consumer name {name:?} in namespace {}",
                            id.namespace
                        ),
                    )
                } else {
                    doc.insert(name, entry);
                    Status::accepted(generation)
                }
            }
            Err(e) => Status::invalid(generation, e.clone()),
        };
        statuses.insert(id.clone(), status);
    }
    let json = (!doc.is_empty()).then(|| {
        jsontext::object(
            doc.iter()
                .map(|(name, entry)| (jsontext::quoted(name), *entry)),
        )
    });
    (json, statuses)
}

fn consumer_entry(id: &ObjectRef, spec: &Value) -> Result<(String, Value), String> {
    let obj = spec.as_object().ok_or("spec: must be a map")?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "auth" | "filters" | "name"))
    {
        return Err(format!("spec.{extra}: unknown field"));
    }
    // HTNN uses `spec.name` only when non-empty.
    let name = match obj.get("name") {
        None | Some(Value::Null) => id.name.to_string(),
        Some(Value::String(s)) if s.is_empty() => id.name.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("spec.name: must be a string".into()),
    };
    // `{config: ...}` entries become bare configs in the carrier; as in policies, a missing
    // `config` means no settings.
    let unwrap = |field: &str| -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (plugin, entry) in m {
                    let config = entry
                        .as_object()
                        .filter(|e| e.keys().all(|k| k == "config"))
                        .map(|e| e.get("config").cloned().unwrap_or(Value::Null))
                        .ok_or_else(|| {
                            format!("spec.{field}.{plugin}: expected {{config: {{...}}}}")
                        })?;
                    out.insert(plugin.clone(), config);
                }
            }
            Some(_) => return Err(format!("spec.{field}: must be a map")),
        }
        Ok(out)
    };
    let (auth, filters) = (unwrap("auth")?, unwrap("filters")?);
    // Check entry by entry first so that errors name the field (`spec.auth.keyAuth.config.key`).
    if auth.is_empty() {
        return Err("spec.auth: at least one consumer plugin required".into());
    }
    for (plugin, config) in &auth {
        htnn_plugins::validate_consumer_auth(plugin, config)
            .map_err(|e| policy::plugin_error("spec.auth", plugin, e))?;
    }
    for (plugin, config) in &filters {
        htnn_plugins::validate_consumer_filter(plugin, config)
            .map_err(|e| policy::plugin_error("spec.filters", plugin, e))?;
    }
    let entry = json!({"auth": auth, "filters": filters});
    htnn_plugins::Consumer::parse(&id.namespace, &name, &entry)
        .map_err(|e| format!("spec: {e}"))?;
    Ok((name, entry))
}

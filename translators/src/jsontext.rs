//! Writing compact JSON text from pieces that are already JSON text, exactly as serde_json
//! writes a map (keys given in sorted order): the consumer carrier and route chains are
//! assembled from configs serialized once, instead of building and serializing JSON trees.

/// `s` as a JSON string.
pub(crate) fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `{k1:v1,k2:v2}` from quoted keys (in order) and JSON values.
pub(crate) fn object<K: AsRef<str>, V: AsRef<str>>(
    members: impl Iterator<Item = (K, V)>,
) -> String {
    let mut json = String::from("{");
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(k.as_ref());
        json.push(':');
        json.push_str(v.as_ref());
    }
    json.push('}');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_serde_json_writes() {
        let v = serde_json::json!({"a \"b\"": {"x": 1}, "c": [true, null]});
        let members = [("a \"b\"", r#"{"x":1}"#), ("c", "[true,null]")]
            .into_iter()
            .map(|(k, v)| (quoted(k), v));
        assert_eq!(object(members), v.to_string());
        assert_eq!(object(std::iter::empty::<(String, String)>()), "{}");
    }
}

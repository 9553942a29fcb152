//! `google.protobuf.Struct`, `Value` and `ListValue` with ordered maps.
//!
//! pbjson-types keeps `Struct.fields` in a `HashMap`, so the protobuf encoding of the same
//! object changes from one parse to the next. Our versions are content hashes of the encoded
//! bytes, so these types keep their fields sorted: equal content, equal bytes.
//! Wire format and proto3 JSON are those of the well-known types.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Struct {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, Value>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Value {
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<value::Kind>,
}

pub mod value {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Kind {
        #[prost(enumeration = "pbjson_types::NullValue", tag = "1")]
        NullValue(i32),
        #[prost(double, tag = "2")]
        NumberValue(f64),
        #[prost(string, tag = "3")]
        StringValue(String),
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        #[prost(message, tag = "5")]
        StructValue(super::Struct),
        #[prost(message, tag = "6")]
        ListValue(super::ListValue),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        use value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(ListValue {
                values: a.into_iter().map(Value::from).collect(),
            }),
            serde_json::Value::Object(m) => Kind::StructValue(Struct::from(m)),
        };
        Value { kind: Some(kind) }
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for Struct {
    fn from(m: serde_json::Map<String, serde_json::Value>) -> Self {
        Struct {
            fields: m.into_iter().map(|(k, v)| (k, Value::from(v))).collect(),
        }
    }
}

impl From<&Value> for serde_json::Value {
    fn from(v: &Value) -> Self {
        use value::Kind;
        match &v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
            // Integral numbers print without a fraction, as Go's protojson does.
            Some(Kind::NumberValue(n))
                if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 =>
            {
                serde_json::Value::from(*n as i64)
            }
            Some(Kind::NumberValue(n)) => {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
            Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
            Some(Kind::ListValue(l)) => {
                serde_json::Value::Array(l.values.iter().map(Into::into).collect())
            }
            Some(Kind::StructValue(s)) => serde_json::Value::from(s),
        }
    }
}

impl From<&Struct> for serde_json::Value {
    fn from(s: &Struct) -> Self {
        serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
        )
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::Value::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Value::from)
    }
}

impl Serialize for Struct {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::Value::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Struct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Object(m) => Ok(Struct::from(m)),
            other => Err(de::Error::custom(format!(
                "expected an object, got {other}"
            ))),
        }
    }
}

impl Serialize for ListValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.values.iter())
    }
}

impl<'de> Deserialize<'de> for ListValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ListValue {
            values: Vec::<Value>::deserialize(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn encoding_is_deterministic_and_round_trips() {
        let json = serde_json::json!({"b": 1, "a": [true, null, "x", 1.5], "c": {"z": 1, "y": 2}});
        let s1: Struct = serde_json::from_value(json.clone()).unwrap();
        let s2: Struct = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(s1.encode_to_vec(), s2.encode_to_vec());
        assert_eq!(serde_json::to_value(&s1).unwrap(), json);
        // Same bytes as the well-known type decodes.
        let decoded = pbjson_types::Struct::decode(s1.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.fields.len(), 3);
    }
}

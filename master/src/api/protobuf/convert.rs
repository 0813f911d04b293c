//! Converts between bramble's JSON objects and Kubernetes protobuf messages,
//! driven by the message descriptors: field names in Kubernetes' protos are
//! the JSON names, so only the types Kubernetes encodes differently are
//! special cases (`Time`, `MicroTime`, `Duration`, `Quantity`,
//! `IntOrString`, `RawExtension`, `FieldsV1`, bytes as base64 in JSON).
//!
//! From protobuf to JSON, zero values need care: Go's protobuf encoding
//! writes every non-pointer field, even when empty, while its JSON omits
//! empty ones (`omitempty`). A decoded empty string, `false` or `0` is
//! therefore left out, as Go's JSON would, except for the pointer fields
//! where zero means something other than "unset" (`replicas: 0`,
//! `runAsUser: 0`, `automountServiceAccountToken: false`, ...), listed in
//! [`ZERO_IS_MEANINGFUL`] and [`FALSE_IS_MEANINGFUL`].

use std::collections::HashMap;

use base64::Engine;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::{Map, Value as Json};

use super::schema;

/// Integer fields that are Go pointers whose `0` differs from unset.
pub const ZERO_IS_MEANINGFUL: &[&str] = &[
    "replicas",
    "terminationGracePeriodSeconds",
    "deletionGracePeriodSeconds",
    "gracePeriodSeconds",
    "activeDeadlineSeconds",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "parallelism",
    "completions",
    "ttlSecondsAfterFinished",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "startingDeadlineSeconds",
    "defaultMode",
    "mode",
    "priority",
    "expirationSeconds",
    "minReadySeconds",
    "partition",
    "maxSkew",
];

/// Boolean fields that are Go pointers whose `false` differs from unset.
pub const FALSE_IS_MEANINGFUL: &[&str] = &[
    "automountServiceAccountToken",
    "enableServiceLinks",
    "allowPrivilegeEscalation",
    "runAsNonRoot",
    "suspend",
    "manualSelector",
    "paused",
    "ready",
    "serving",
    "terminating",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "hostUsers",
    "allocateLoadBalancerNodePorts",
];

/// Fields that Go embeds with `json:",inline"`: one protobuf field holding a
/// message whose fields appear directly in the parent's JSON. Protobuf does
/// not record this, so it is listed here from the Go types (`k8s.io/api`
/// v0.32.9 `types.go`, every embedded struct with a `protobuf` tag), as
/// `(message, field)`.
pub const INLINE_FIELDS: &[(&str, &str)] = &[
    ("Volume", "volumeSource"),
    ("PersistentVolumeSpec", "persistentVolumeSource"),
    ("SecretProjection", "localObjectReference"),
    ("ConfigMapVolumeSource", "localObjectReference"),
    ("ConfigMapProjection", "localObjectReference"),
    ("ConfigMapKeySelector", "localObjectReference"),
    ("SecretKeySelector", "localObjectReference"),
    ("ConfigMapEnvSource", "localObjectReference"),
    ("SecretEnvSource", "localObjectReference"),
    ("Probe", "handler"),
    ("EphemeralContainer", "ephemeralContainerCommon"),
];

/// True when `field` of `message` is a Go inline embedding.
pub fn is_inline(message: &MessageDescriptor, field: &FieldDescriptor) -> bool {
    INLINE_FIELDS
        .iter()
        .any(|(m, f)| *f == field.name() && *m == message.name())
}

/// A value that does not fit the message it is converted into.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The JSON value at `path` has the wrong type for its field.
    #[error("{path}: {message}")]
    Mismatch {
        /// Where, as a JSON path (`spec.containers[0].ports`).
        path: String,
        /// What was expected.
        message: String,
    },
    /// A nested protobuf object could not be decoded.
    #[error("{path}: {message}")]
    Nested {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
}

fn mismatch(path: &str, message: impl Into<String>) -> ConvertError {
    ConvertError::Mismatch {
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path.to_string()
        },
        message: message.into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Build a message of type `desc` from a JSON object. Keys the message has
/// no field for (`apiVersion`, `kind`) are left out; `null` means unset.
pub fn json_to_message(
    desc: &MessageDescriptor,
    json: &Json,
    path: &str,
) -> Result<DynamicMessage, ConvertError> {
    let Json::Object(map) = json else {
        return Err(mismatch(
            path,
            format!("expected an object for {}", desc.name()),
        ));
    };
    let mut message = DynamicMessage::new(desc.clone());
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        let Some(field) = desc.get_field_by_name(key) else {
            continue;
        };
        let field_path = join(path, key);
        let converted = json_to_field(&field, value, &field_path)?;
        message.set_field(&field, converted);
    }
    for field in desc.fields().filter(|f| is_inline(desc, f)) {
        if let Kind::Message(inner) = field.kind() {
            let embedded = json_to_message(&inner, json, path)?;
            if embedded.fields().next().is_some() {
                message.set_field(&field, Value::Message(embedded));
            }
        }
    }
    Ok(message)
}

fn json_to_field(field: &FieldDescriptor, json: &Json, path: &str) -> Result<Value, ConvertError> {
    if field.is_map() {
        let Json::Object(map) = json else {
            return Err(mismatch(path, "expected an object"));
        };
        let Kind::Message(entry) = field.kind() else {
            return Err(mismatch(path, "map field without an entry type"));
        };
        let value_kind = entry.map_entry_value_field().kind();
        let mut out = HashMap::with_capacity(map.len());
        for (key, value) in map {
            if value.is_null() {
                continue;
            }
            let converted = json_to_single(&value_kind, value, &format!("{path}[{key}]"))?;
            out.insert(MapKey::String(key.clone()), converted);
        }
        return Ok(Value::Map(out));
    }
    if field.is_list() {
        let Json::Array(items) = json else {
            return Err(mismatch(path, "expected a list"));
        };
        let kind = field.kind();
        let list = items
            .iter()
            .enumerate()
            .map(|(i, item)| json_to_single(&kind, item, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::List(list));
    }
    json_to_single(&field.kind(), json, path)
}

fn json_integer(json: &Json, path: &str) -> Result<i64, ConvertError> {
    match json {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| mismatch(path, format!("expected a whole number, got {n}"))),
        Json::String(s) => s
            .parse()
            .map_err(|_| mismatch(path, format!("expected a whole number, got {s:?}"))),
        other => Err(mismatch(
            path,
            format!("expected a whole number, got {other}"),
        )),
    }
}

fn json_to_single(kind: &Kind, json: &Json, path: &str) -> Result<Value, ConvertError> {
    Ok(match kind {
        Kind::String => Value::String(match json {
            Json::String(s) => s.clone(),
            Json::Number(_) | Json::Bool(_) => json.to_string(),
            other => return Err(mismatch(path, format!("expected a string, got {other}"))),
        }),
        Kind::Bool => Value::Bool(
            json.as_bool()
                .ok_or_else(|| mismatch(path, format!("expected true or false, got {json}")))?,
        ),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            let n = json_integer(json, path)?;
            Value::I32(i32::try_from(n).map_err(|_| mismatch(path, "out of range for int32"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(json_integer(json, path)?),
        Kind::Uint32 | Kind::Fixed32 => {
            let n = json_integer(json, path)?;
            Value::U32(u32::try_from(n).map_err(|_| mismatch(path, "out of range for uint32"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            let n = json_integer(json, path)?;
            Value::U64(u64::try_from(n).map_err(|_| mismatch(path, "out of range for uint64"))?)
        }
        Kind::Double | Kind::Float => {
            let f = json
                .as_f64()
                .ok_or_else(|| mismatch(path, format!("expected a number, got {json}")))?;
            if matches!(kind, Kind::Float) {
                Value::F32(f as f32)
            } else {
                Value::F64(f)
            }
        }
        Kind::Bytes => {
            let text = json
                .as_str()
                .ok_or_else(|| mismatch(path, "expected a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| mismatch(path, format!("not valid base64: {e}")))?;
            Value::Bytes(bytes.into())
        }
        Kind::Enum(_) => Value::EnumNumber(json_integer(json, path)? as i32),
        Kind::Message(desc) => Value::Message(json_to_special(desc, json, path)?),
    })
}

fn set(message: &mut DynamicMessage, name: &str, value: Value) {
    if let Some(field) = message.descriptor().get_field_by_name(name) {
        message.set_field(&field, value);
    }
}

fn json_to_special(
    desc: &MessageDescriptor,
    json: &Json,
    path: &str,
) -> Result<DynamicMessage, ConvertError> {
    let mut message = DynamicMessage::new(desc.clone());
    match desc.full_name() {
        schema::TIME | schema::MICRO_TIME => {
            let text = json
                .as_str()
                .ok_or_else(|| mismatch(path, "expected an RFC 3339 time"))?;
            let time: jiff::Timestamp = text
                .parse()
                .map_err(|e| mismatch(path, format!("not an RFC 3339 time: {e}")))?;
            set(&mut message, "seconds", Value::I64(time.as_second()));
            if desc.full_name() == schema::MICRO_TIME {
                let nanos = time.subsec_nanosecond() / 1000 * 1000;
                set(&mut message, "nanos", Value::I32(nanos));
            }
        }
        schema::QUANTITY => {
            let text = match json {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                other => return Err(mismatch(path, format!("expected a quantity, got {other}"))),
            };
            set(&mut message, "string", Value::String(text));
        }
        schema::INT_OR_STRING => match json {
            Json::String(s) => {
                set(&mut message, "type", Value::I64(1));
                set(&mut message, "strVal", Value::String(s.clone()));
            }
            other => {
                let n = json_integer(other, path)?;
                let n = i32::try_from(n).map_err(|_| mismatch(path, "out of range for int32"))?;
                set(&mut message, "type", Value::I64(0));
                set(&mut message, "intVal", Value::I32(n));
            }
        },
        schema::RAW_EXTENSION => {
            let raw = serde_json::to_vec(json).unwrap_or_default();
            set(&mut message, "raw", Value::Bytes(raw.into()));
        }
        schema::FIELDS_V1 => {
            let raw = serde_json::to_vec(json).unwrap_or_default();
            set(&mut message, "Raw", Value::Bytes(raw.into()));
        }
        schema::DURATION => {
            let text = json
                .as_str()
                .ok_or_else(|| mismatch(path, "expected a duration such as \"1m30s\""))?;
            let nanos = parse_go_duration(text)
                .ok_or_else(|| mismatch(path, format!("not a duration: {text:?}")))?;
            set(&mut message, "duration", Value::I64(nanos));
        }
        _ => return json_to_message(desc, json, path),
    }
    Ok(message)
}

/// The JSON form of a decoded message.
pub fn message_to_json(message: &DynamicMessage) -> Result<Json, ConvertError> {
    message_to_json_at(message, "")
}

fn message_to_json_at(message: &DynamicMessage, path: &str) -> Result<Json, ConvertError> {
    let mut map = Map::new();
    let desc = message.descriptor();
    for (field, value) in message.fields() {
        if let (true, Value::Message(embedded)) = (is_inline(&desc, &field), value) {
            if let Json::Object(inner) = message_to_json_at(embedded, path)? {
                map.extend(inner);
            }
            continue;
        }
        let field_path = join(path, field.name());
        if let Some(json) = field_to_json(&field, value, &field_path)? {
            map.insert(field.name().to_string(), json);
        }
    }
    Ok(Json::Object(map))
}

fn field_to_json(
    field: &FieldDescriptor,
    value: &Value,
    path: &str,
) -> Result<Option<Json>, ConvertError> {
    Ok(match value {
        Value::Map(entries) => {
            if entries.is_empty() {
                return Ok(None);
            }
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                let item_path = format!("{path}[{key}]");
                map.insert(
                    key,
                    single_to_json(value, &item_path)?.unwrap_or(Json::Null),
                );
            }
            Some(Json::Object(map))
        }
        Value::List(items) => {
            if items.is_empty() {
                return Ok(None);
            }
            let list = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    single_to_json(item, &format!("{path}[{i}]")).map(|v| v.unwrap_or(Json::Null))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(Json::Array(list))
        }
        Value::String(s) if s.is_empty() => None,
        Value::Bool(false) if !FALSE_IS_MEANINGFUL.contains(&field.name()) => None,
        Value::I32(0) | Value::I64(0) | Value::U32(0) | Value::U64(0)
            if !ZERO_IS_MEANINGFUL.contains(&field.name()) =>
        {
            None
        }
        other => single_to_json(other, path)?,
    })
}

/// A single value (a list item, a map value or a plain field); None for an
/// unset `Time`.
fn single_to_json(value: &Value, path: &str) -> Result<Option<Json>, ConvertError> {
    Ok(Some(match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => Json::from(*n),
        Value::Message(m) => return special_to_json(m, path),
        Value::List(_) | Value::Map(_) => {
            return Err(mismatch(
                path,
                "a nested list or map is not a Kubernetes type",
            ))
        }
    }))
}

fn get<'a>(message: &'a DynamicMessage, name: &str) -> Option<std::borrow::Cow<'a, Value>> {
    message.get_field_by_name(name)
}

fn special_to_json(message: &DynamicMessage, path: &str) -> Result<Option<Json>, ConvertError> {
    let desc = message.descriptor();
    Ok(Some(match desc.full_name() {
        schema::TIME | schema::MICRO_TIME => {
            let seconds = get(message, "seconds")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let nanos = get(message, "nanos").and_then(|v| v.as_i32()).unwrap_or(0);
            if !message.has_field_by_name("seconds") && !message.has_field_by_name("nanos") {
                return Ok(None);
            }
            let time = jiff::Timestamp::from_second(seconds)
                .map_err(|e| mismatch(path, format!("time out of range: {e}")))?;
            let base = time.strftime("%Y-%m-%dT%H:%M:%S").to_string();
            if desc.full_name() == schema::MICRO_TIME {
                Json::String(format!("{base}.{:06}Z", nanos.max(0) / 1000))
            } else {
                Json::String(format!("{base}Z"))
            }
        }
        schema::QUANTITY => Json::String(
            get(message, "string")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        ),
        schema::INT_OR_STRING => {
            let is_string = get(message, "type").and_then(|v| v.as_i64()).unwrap_or(0) == 1;
            if is_string {
                Json::String(
                    get(message, "strVal")
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                )
            } else {
                Json::from(get(message, "intVal").and_then(|v| v.as_i32()).unwrap_or(0))
            }
        }
        schema::RAW_EXTENSION | schema::FIELDS_V1 => {
            let name = if desc.full_name() == schema::FIELDS_V1 {
                "Raw"
            } else {
                "raw"
            };
            let raw = get(message, name)
                .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
                .unwrap_or_default();
            if raw.is_empty() {
                return Ok(None);
            }
            if raw.starts_with(super::PREFIX) {
                super::decode_envelope(&raw, None)
                    .map(|(_, json)| json)
                    .map_err(|e| ConvertError::Nested {
                        path: path.to_string(),
                        message: e.to_string(),
                    })?
            } else {
                serde_json::from_slice(&raw).map_err(|e| ConvertError::Nested {
                    path: path.to_string(),
                    message: format!("embedded object is not JSON: {e}"),
                })?
            }
        }
        schema::DURATION => {
            let nanos = get(message, "duration")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            Json::String(format_go_duration(nanos))
        }
        _ => message_to_json_at(message, path)?,
    }))
}

/// Parse a Go duration (`1h30m`, `1.5s`, `300ms`) into nanoseconds.
pub fn parse_go_duration(text: &str) -> Option<i64> {
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
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * unit;
    }
    let nanos = total.round() as i64;
    Some(if negative { -nanos } else { nanos })
}

/// Format nanoseconds as Go's `time.Duration.String` does (`1h0m0s`, `1.5s`, `300ms`).
pub fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let fraction = |value: u64, scale: u64| -> String {
        let whole = value / scale;
        let frac = value % scale;
        if frac == 0 {
            whole.to_string()
        } else {
            let digits = scale.to_string().len() - 1;
            let text = format!("{whole}.{frac:0digits$}");
            text.trim_end_matches('0').to_string()
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", fraction(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(n, 1_000_000));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = (n / 60_000_000_000) % 60;
    let seconds = fraction(n % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inline_fields_exist_in_the_descriptors() {
        for (message, field) in INLINE_FIELDS {
            let found = schema::pool()
                .all_messages()
                .any(|m| m.name() == *message && m.get_field_by_name(field).is_some());
            assert!(found, "{message}.{field}");
        }
    }

    #[test]
    fn go_durations_round_trip() {
        for (text, nanos) in [
            ("1h0m0s", 3_600_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5s", 1_500_000_000),
            ("300ms", 300_000_000),
            ("0s", 0),
        ] {
            assert_eq!(parse_go_duration(text), Some(nanos), "{text}");
            assert_eq!(format_go_duration(nanos), text);
        }
        assert_eq!(parse_go_duration("5x"), None);
    }

    #[test]
    fn pod_round_trips_with_special_types() {
        let desc = schema::message_for("v1", "Pod").expect("Pod");
        let pod = json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web", "empty": ""},
                         "creationTimestamp": "2026-12-07T10:00:00Z"},
            "spec": {
                "containers": [{
                    "name": "c", "image": "busybox",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                    "livenessProbe": {"httpGet": {"port": "http", "path": "/"}},
                    "readinessProbe": {"tcpSocket": {"port": 8080}},
                }],
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": false,
                "volumes": [{"name": "scratch", "emptyDir": {}}],
            },
        });
        let message = json_to_message(&desc, &pod, "").expect("encode");
        let bytes = prost::Message::encode_to_vec(&message);
        let decoded = DynamicMessage::decode(desc, bytes.as_slice()).expect("decode");
        let back = message_to_json(&decoded).expect("json");
        assert_eq!(back["metadata"], pod["metadata"]);
        assert_eq!(back["spec"], pod["spec"]);
    }

    #[test]
    fn secret_bytes_are_base64_in_json() {
        let desc = schema::message_for("v1", "Secret").expect("Secret");
        let secret =
            json!({"metadata": {"name": "s"}, "data": {"k": "aGVsbG8="}, "type": "Opaque"});
        let message = json_to_message(&desc, &secret, "").expect("encode");
        let back = message_to_json(&message).expect("json");
        assert_eq!(back, secret);
    }

    #[test]
    fn mismatched_json_names_the_path() {
        let desc = schema::message_for("apps/v1", "Deployment").expect("Deployment");
        let bad = json!({"spec": {"replicas": "many"}});
        let error = json_to_message(&desc, &bad, "").expect_err("mismatch");
        assert!(error.to_string().starts_with("spec.replicas:"), "{error}");
    }
}

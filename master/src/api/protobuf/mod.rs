//! `application/vnd.kubernetes.protobuf`, as kube-apiserver speaks it.
//!
//! A protobuf body is the four bytes `k8s\0` followed by a
//! `runtime.Unknown` message whose `typeMeta` names the object's
//! `apiVersion` and `kind` and whose `raw` holds the object's own message.
//! A watch answered in protobuf (`;stream=watch`) is a sequence of frames,
//! each a 4-byte big-endian length and a bare `metav1.WatchEvent` whose
//! `object.raw` is an enveloped object.
//!
//! Which format an answer takes follows the request's `Accept` header as
//! kube-apiserver negotiates it: the first media type the server can produce
//! wins, `*/*` and no header mean JSON. The conversions between bramble's
//! JSON objects and the messages live in [`convert`], the descriptors in
//! [`schema`].

pub mod convert;
pub mod schema;

use axum::http::{header, HeaderMap};
use prost::Message;
use prost_reflect::{DynamicMessage, Value};
use serde_json::Value as Json;

/// The media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of protobuf watch streams.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// The magic bytes in front of every enveloped message.
pub const PREFIX: &[u8] = b"k8s\0";

/// Why a protobuf body cannot be decoded or an object cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    NoPrefix,
    /// The envelope or the object does not decode.
    #[error("the protobuf body does not decode as {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// The envelope names a type the server does not know.
    #[error("no protobuf type for apiVersion {api_version:?} kind {kind:?}: send a supported kind, or application/json")]
    UnknownType {
        /// The envelope's `apiVersion`.
        api_version: String,
        /// The envelope's `kind`.
        kind: String,
    },
    /// The envelope carries the object in another encoding.
    #[error("the protobuf envelope holds content type {0:?}; only raw protobuf is accepted")]
    ContentType(String),
    /// A JSON object does not fit its message (a server defect).
    #[error("cannot encode as protobuf: {0}")]
    Convert(#[from] convert::ConvertError),
    /// The descriptors lack a message the codec needs (a build defect).
    #[error("the protobuf descriptors lack {0}")]
    MissingDescriptor(&'static str),
}

/// The format an answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (also for `*/*` and no `Accept`).
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

/// Negotiate the answer's format from `Accept` as kube-apiserver does: the
/// first media range the server produces wins. A range with parameters
/// asking for another shape (`as=Table`) is JSON-only here.
pub fn negotiate(headers: &HeaderMap) -> Format {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Format::Json;
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<&str> = parts.collect();
        let plain = !params.iter().any(|p| p.starts_with("as="));
        match media.as_str() {
            MEDIA_TYPE if plain => return Format::Protobuf,
            "application/json" | "application/*" | "*/*" | "application/yaml" => {
                return Format::Json
            }
            _ => continue,
        }
    }
    Format::Json
}

/// True when the request body is protobuf (by `Content-Type`).
pub fn is_protobuf_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with(MEDIA_TYPE))
}

fn unknown_descriptor() -> Result<prost_reflect::MessageDescriptor, ProtobufError> {
    schema::message(schema::UNKNOWN).ok_or(ProtobufError::MissingDescriptor("runtime.Unknown"))
}

/// Encode a JSON object (with its `apiVersion` and `kind`) as an enveloped
/// protobuf body.
pub fn encode_object(object: &Json) -> Result<Vec<u8>, ProtobufError> {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or("");
    let desc =
        schema::message_for(api_version, kind).ok_or_else(|| ProtobufError::UnknownType {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })?;
    let message = convert::json_to_message(&desc, object, "")?;
    envelope(api_version, kind, message.encode_to_vec())
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Result<Vec<u8>, ProtobufError> {
    let unknown_desc = unknown_descriptor()?;
    let mut unknown = DynamicMessage::new(unknown_desc.clone());
    let type_meta_field = unknown_desc
        .get_field_by_name("typeMeta")
        .ok_or(ProtobufError::MissingDescriptor("runtime.Unknown.typeMeta"))?;
    let type_meta_desc = type_meta_field
        .kind()
        .as_message()
        .cloned()
        .ok_or(ProtobufError::MissingDescriptor("runtime.TypeMeta"))?;
    let mut type_meta = DynamicMessage::new(type_meta_desc);
    type_meta.set_field_by_name("apiVersion", Value::String(api_version.to_string()));
    type_meta.set_field_by_name("kind", Value::String(kind.to_string()));
    unknown.set_field(&type_meta_field, Value::Message(type_meta));
    unknown.set_field_by_name("raw", Value::Bytes(raw.into()));
    let mut out = Vec::with_capacity(PREFIX.len() + unknown.encoded_len());
    out.extend_from_slice(PREFIX);
    unknown
        .encode(&mut out)
        .map_err(|_| ProtobufError::MissingDescriptor("buffer"))?;
    Ok(out)
}

/// Decode an enveloped protobuf body into `(apiVersion, kind)` and the
/// object as JSON (with `apiVersion` and `kind` set). `fallback` names the
/// type when the envelope leaves it empty.
pub fn decode_envelope(
    body: &[u8],
    fallback: Option<(&str, &str)>,
) -> Result<((String, String), Json), ProtobufError> {
    let data = body.strip_prefix(PREFIX).ok_or(ProtobufError::NoPrefix)?;
    let unknown = DynamicMessage::decode(unknown_descriptor()?, data).map_err(|source| {
        ProtobufError::Decode {
            what: "a runtime.Unknown envelope".into(),
            source,
        }
    })?;
    let text = |message: &DynamicMessage, name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let content_type = text(&unknown, "contentType");
    if !content_type.is_empty() && content_type != MEDIA_TYPE {
        return Err(ProtobufError::ContentType(content_type));
    }
    let (mut api_version, mut kind) = match unknown.get_field_by_name("typeMeta") {
        Some(tm) => match tm.as_message() {
            Some(tm) => (text(tm, "apiVersion"), text(tm, "kind")),
            None => Default::default(),
        },
        None => Default::default(),
    };
    if let Some((fallback_version, fallback_kind)) = fallback {
        if api_version.is_empty() {
            api_version = fallback_version.to_string();
        }
        if kind.is_empty() {
            kind = fallback_kind.to_string();
        }
    }
    let desc =
        schema::message_for(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownType {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let object = DynamicMessage::decode(desc, raw).map_err(|source| ProtobufError::Decode {
        what: format!("{api_version} {kind}"),
        source,
    })?;
    let mut json = convert::message_to_json(&object)?;
    if let Some(map) = json.as_object_mut() {
        map.insert("apiVersion".into(), Json::String(api_version.clone()));
        map.insert("kind".into(), Json::String(kind.clone()));
    }
    Ok(((api_version, kind), json))
}

/// One frame of a protobuf watch stream: the length, then a bare
/// `WatchEvent` whose object is enveloped.
pub fn watch_frame(event_type: &str, object: &Json) -> Result<Vec<u8>, ProtobufError> {
    let raw = encode_object(object)?;
    let event_desc = schema::message(&format!("{}.WatchEvent", schema::META_V1))
        .ok_or(ProtobufError::MissingDescriptor("metav1.WatchEvent"))?;
    let object_field = event_desc
        .get_field_by_name("object")
        .ok_or(ProtobufError::MissingDescriptor("metav1.WatchEvent.object"))?;
    let raw_desc = object_field
        .kind()
        .as_message()
        .cloned()
        .ok_or(ProtobufError::MissingDescriptor("runtime.RawExtension"))?;
    let mut raw_extension = DynamicMessage::new(raw_desc);
    raw_extension.set_field_by_name("raw", Value::Bytes(raw.into()));
    let mut event = DynamicMessage::new(event_desc);
    event.set_field_by_name("type", Value::String(event_type.to_string()));
    event.set_field(&object_field, Value::Message(raw_extension));
    let body = event.encode_to_vec();
    let length = u32::try_from(body.len())
        .map_err(|_| ProtobufError::MissingDescriptor("a frame under 4 GiB"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn negotiates_like_kube_apiserver() {
        assert_eq!(negotiate(&HeaderMap::new()), Format::Json);
        assert_eq!(
            negotiate(&accept("application/vnd.kubernetes.protobuf, */*")),
            Format::Protobuf
        );
        assert_eq!(
            negotiate(&accept(
                "application/json, application/vnd.kubernetes.protobuf"
            )),
            Format::Json
        );
        assert_eq!(
            negotiate(&accept(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
            )),
            Format::Json
        );
        assert_eq!(
            negotiate(&accept("text/html, application/vnd.kubernetes.protobuf")),
            Format::Protobuf
        );
    }

    #[test]
    fn envelope_round_trips_a_configmap() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "c", "namespace": "default", "resourceVersion": "7"},
                        "data": {"a": "1"}});
        let body = encode_object(&cm).expect("encode");
        assert!(body.starts_with(PREFIX));
        let ((av, kind), back) = decode_envelope(&body, None).expect("decode");
        assert_eq!((av.as_str(), kind.as_str()), ("v1", "ConfigMap"));
        assert_eq!(back, cm);
    }

    #[test]
    fn garbage_is_refused_with_kubernetes_words() {
        let error = decode_envelope(b"{\"kind\":1}", None).expect_err("no prefix");
        assert!(error.to_string().contains("expected prefix [107 56 115 0]"));
        let error = decode_envelope(b"k8s\0\x0a\xff\xff", None).expect_err("truncated");
        assert!(matches!(error, ProtobufError::Decode { .. }), "{error}");
    }

    #[test]
    fn watch_frames_are_length_prefixed_events() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let frame = watch_frame("ADDED", &pod).expect("frame");
        let length = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(length, frame.len() - 4);
        let desc = schema::message(&format!("{}.WatchEvent", schema::META_V1)).expect("desc");
        let event = DynamicMessage::decode(desc, &frame[4..]).expect("event");
        assert_eq!(
            event.get_field_by_name("type").expect("type").as_str(),
            Some("ADDED")
        );
    }
}

//! The on-disk layout of the store: every redb table, the keys of the `meta`
//! table, and how keys and event records are encoded. Changing anything here
//! changes the file format: bump [`SCHEMA_MARKER`] and write a migration.
//!
//! | table | key | value |
//! |---|---|---|
//! | `objects` | `"{Kind}/{namespace}/{name}"` (`""` namespace for cluster-scoped kinds) | compact JSON of the object |
//! | `meta` | [`META_SCHEMA`], [`META_REVISION`], [`META_CREATED`] | marker bytes, big-endian u64, RFC 3339 text |
//! | `events` | revision | [`encode_event`]: type byte, key length (u16 LE), key, object JSON |
//! | `owners` | `"{owner uid}/{Kind}/{namespace}/{name}"` | `()` |
//!
//! Object keys sort by kind, then namespace, then name, so listing a kind or a
//! kind in one namespace is a range scan: neither a kind name nor a namespace
//! contains `/`, and `0` is the byte after `/`.

use bramble_common::Kind;
use redb::TableDefinition;

use super::{EventType, ObjectKey};

/// Every object: object key → compact JSON.
pub(crate) const OBJECTS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("objects");
/// Store-wide facts: the schema marker, the revision counter, the creation time.
pub(crate) const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
/// The bounded event log for watches: revision → encoded event.
pub(crate) const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");
/// Owner index: `"{owner uid}/{object key}"` → `()`.
pub(crate) const OWNERS: TableDefinition<'static, &str, ()> = TableDefinition::new("owners");

/// `meta` key of the schema marker.
pub(crate) const META_SCHEMA: &str = "schema";
/// `meta` key of the cluster-wide revision counter (u64, big-endian).
pub(crate) const META_REVISION: &str = "revision";
/// `meta` key of the time the store was created (RFC 3339).
pub(crate) const META_CREATED: &str = "created";

/// The marker written into every new store; opening a file requires it.
pub const SCHEMA_MARKER: &str = "bramble-store/v1";
/// The prefix every bramble schema marker starts with (to tell a newer
/// bramble's store from a foreign file).
pub(crate) const SCHEMA_PREFIX: &str = "bramble-store/";

/// The `objects` key of an object.
pub(crate) fn object_key(key: &ObjectKey) -> String {
    format!("{}/{}/{}", key.kind.name(), key.namespace, key.name)
}

/// The half-open range of `objects` keys holding `kind` (in `namespace`
/// when given).
pub(crate) fn object_range(kind: Kind, namespace: Option<&str>) -> (String, String) {
    match namespace {
        Some(ns) => (
            format!("{}/{ns}/", kind.name()),
            format!("{}/{ns}0", kind.name()),
        ),
        None => (format!("{}/", kind.name()), format!("{}0", kind.name())),
    }
}

/// Parses an `objects` key back into an [`ObjectKey`].
pub(crate) fn parse_object_key(text: &str) -> Option<ObjectKey> {
    let mut parts = text.splitn(3, '/');
    let kind_name = parts.next()?;
    let namespace = parts.next()?;
    let name = parts.next()?;
    let kind = Kind::all()
        .iter()
        .copied()
        .find(|k| k.name() == kind_name)?;
    Some(ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// The `owners` key linking `owner_uid` to the dependent `key`.
pub(crate) fn owner_key(owner_uid: &str, key: &ObjectKey) -> String {
    format!("{owner_uid}/{}", object_key(key))
}

/// The half-open range of `owners` keys that may belong to `owner_uid`
/// (callers still check the parsed uid: a uid may itself contain `/`).
pub(crate) fn owner_range(owner_uid: &str) -> (String, String) {
    (format!("{owner_uid}/"), format!("{owner_uid}0"))
}

/// Parses an `owners` key into (owner uid, dependent key).
pub(crate) fn parse_owner_key(text: &str) -> Option<(&str, ObjectKey)> {
    // The dependent's key is the last three segments; the uid is the rest.
    let mut parts = text.rsplitn(4, '/');
    let name = parts.next()?;
    let namespace = parts.next()?;
    let kind_name = parts.next()?;
    let uid = parts.next()?;
    let kind = Kind::all()
        .iter()
        .copied()
        .find(|k| k.name() == kind_name)?;
    Some((
        uid,
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
    ))
}

fn event_type_byte(event_type: EventType) -> u8 {
    match event_type {
        EventType::Added => b'A',
        EventType::Modified => b'M',
        EventType::Deleted => b'D',
    }
}

/// Encodes an event-log record: type byte, key length (u16 LE), key, JSON.
pub(crate) fn encode_event(event_type: EventType, key: &ObjectKey, object_json: &[u8]) -> Vec<u8> {
    let key_text = object_key(key);
    // Keys are bounded by name-length validation far below u16::MAX.
    let key_len = u16::try_from(key_text.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(3 + key_text.len() + object_json.len());
    out.push(event_type_byte(event_type));
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&key_text.as_bytes()[..usize::from(key_len)]);
    out.extend_from_slice(object_json);
    out
}

/// The header of an event-log record, decoded without parsing the object.
pub(crate) struct EventHeader<'a> {
    /// What happened.
    pub(crate) event_type: EventType,
    /// The object's key.
    pub(crate) key: ObjectKey,
    /// The object's JSON.
    pub(crate) object_json: &'a [u8],
}

/// Decodes an event-log record; `None` if it is malformed.
pub(crate) fn decode_event(bytes: &[u8]) -> Option<EventHeader<'_>> {
    let event_type = match *bytes.first()? {
        b'A' => EventType::Added,
        b'M' => EventType::Modified,
        b'D' => EventType::Deleted,
        _ => return None,
    };
    let len_bytes: [u8; 2] = bytes.get(1..3)?.try_into().ok()?;
    let key_len = usize::from(u16::from_le_bytes(len_bytes));
    let key_text = std::str::from_utf8(bytes.get(3..3 + key_len)?).ok()?;
    let key = parse_object_key(key_text)?;
    Some(EventHeader {
        event_type,
        key,
        object_json: bytes.get(3 + key_len..)?,
    })
}

/// Encodes a revision for the `meta` table.
pub(crate) fn encode_revision(revision: u64) -> [u8; 8] {
    revision.to_be_bytes()
}

/// Decodes a revision from the `meta` table.
pub(crate) fn decode_revision(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_sort_by_kind_then_namespace() {
        let key = |kind, ns: &str, name: &str| {
            object_key(&ObjectKey {
                kind,
                namespace: ns.into(),
                name: name.into(),
            })
        };
        let (lo, hi) = object_range(Kind::Pod, Some("default"));
        let inside = key(Kind::Pod, "default", "web");
        assert!(lo <= inside && inside < hi);
        let other_ns = key(Kind::Pod, "default-2", "web");
        assert!(!(lo <= other_ns && other_ns < hi));
        let (lo, hi) = object_range(Kind::Node, None);
        let node = key(Kind::Node, "", "pi-1");
        assert!(lo <= node && node < hi);
        let ns = key(Kind::Namespace, "", "default");
        assert!(!(lo <= ns && ns < hi));
    }

    #[test]
    fn event_records_round_trip() {
        let key = ObjectKey {
            kind: Kind::Deployment,
            namespace: "apps".into(),
            name: "web".into(),
        };
        let bytes = encode_event(EventType::Modified, &key, b"{\"a\":1}");
        let header = decode_event(&bytes).expect("decodes");
        assert_eq!(header.event_type, EventType::Modified);
        assert_eq!(header.key, key);
        assert_eq!(header.object_json, b"{\"a\":1}");
        assert!(decode_event(b"X\x00\x00").is_none());
        assert!(decode_event(b"A\xff\x00abc").is_none());
    }

    #[test]
    fn owner_keys_round_trip_even_with_slashes_in_the_uid() {
        let key = ObjectKey {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: "web-1".into(),
        };
        let text = owner_key("odd/uid", &key);
        let (uid, parsed) = parse_owner_key(&text).expect("parses");
        assert_eq!(uid, "odd/uid");
        assert_eq!(parsed, key);
    }
}

//! The metadata rules of Kubernetes' registry, as pure functions on JSON:
//! what create sets and strips, what update keeps from the stored object, when
//! `generation` moves and when a write is a no-op. No I/O here; the writer
//! applies the results inside its transaction.

use std::collections::BTreeSet;

use bramble_common::Kind;
use serde_json::{Map, Value};

use super::{ObjectKey, StoreError};

/// Longest object name (a DNS subdomain).
const MAX_NAME_LEN: usize = 253;
/// Length of the random suffix of a generated name.
pub(crate) const GENERATED_SUFFIX_LEN: usize = 5;
/// Longest `generateName` prefix kept (Kubernetes' `maxGeneratedNameLength`).
const MAX_GENERATE_PREFIX_LEN: usize = 63 - GENERATED_SUFFIX_LEN;
/// Characters of a generated suffix: Kubernetes' alphabet, no vowels (no
/// accidental words) and no look-alikes; a subset of `[a-z0-9]`.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Metadata fields only the server sets; create strips client values.
const SERVER_FIELDS: [&str; 6] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

/// Metadata fields update keeps from the stored object, whatever the client
/// sends (`resourceVersion` is set by the writer, `generation` below).
const KEPT_ON_UPDATE: [&str; 4] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// True for kinds with a `status` that only the status subresource writes.
pub(crate) fn kind_has_status(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::ConfigMap
            | Kind::Secret
            | Kind::Event
            | Kind::EndpointSlice
            | Kind::Endpoints
            | Kind::ControllerRevision
    )
}

/// The current time as Kubernetes writes it: RFC 3339, UTC, whole seconds.
pub(crate) fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    match jiff::Timestamp::from_second(now.as_second()) {
        Ok(whole) => whole.to_string(),
        Err(_) => now.to_string(),
    }
}

/// Checks that a key can be stored: scope matches the kind, no `/` in the
/// parts (they are separators in the table keys), sane lengths. An empty
/// name is allowed only where a name will be generated.
pub(crate) fn validate_key(key: &ObjectKey, allow_empty_name: bool) -> Result<(), StoreError> {
    let plural = key.kind.info().plural;
    if key.kind.namespaced() && key.namespace.is_empty() {
        return Err(StoreError::invalid(format!(
            "{plural} are namespaced: a namespace is required"
        )));
    }
    if !key.kind.namespaced() && !key.namespace.is_empty() {
        return Err(StoreError::invalid(format!(
            "{plural} are cluster-scoped: remove the namespace {:?}",
            key.namespace
        )));
    }
    if key.name.is_empty() && !allow_empty_name {
        return Err(StoreError::invalid(format!(
            "{plural}: metadata.name is required"
        )));
    }
    for (field, value) in [
        ("metadata.name", &key.name),
        ("metadata.namespace", &key.namespace),
    ] {
        if value.contains('/') || value.contains('\0') {
            return Err(StoreError::invalid(format!(
                "{field} {value:?} may not contain '/'"
            )));
        }
        if value.len() > MAX_NAME_LEN {
            return Err(StoreError::invalid(format!(
                "{field} is longer than {MAX_NAME_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// The object's `metadata` map, created if absent. Errors when the body is
/// not an object or `metadata` is not an object.
fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, StoreError> {
    let Value::Object(map) = object else {
        return Err(StoreError::invalid("the object must be a JSON object"));
    };
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if metadata.is_null() {
        *metadata = Value::Object(Map::new());
    }
    match metadata {
        Value::Object(meta) => Ok(meta),
        _ => Err(StoreError::invalid("metadata must be a JSON object")),
    }
}

/// The object's `metadata` map, if any.
pub(crate) fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata")?.as_object()
}

/// A string field of `metadata`, `""` when absent.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    metadata(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The stored `resourceVersion` as a number (0 if missing or malformed).
pub(crate) fn resource_version(object: &Value) -> u64 {
    meta_str(object, "resourceVersion").parse().unwrap_or(0)
}

/// True when `metadata.finalizers` is a non-empty list, or, for a
/// Namespace, `spec.finalizers` (Kubernetes keeps the namespace
/// controller's `kubernetes` finalizer there).
pub(crate) fn has_finalizers(object: &Value) -> bool {
    let non_empty = |list: Option<&Value>| {
        list.and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    };
    non_empty(metadata(object).and_then(|m| m.get("finalizers")))
        || (object.get("kind").and_then(Value::as_str) == Some("Namespace")
            && non_empty(object.get("spec").and_then(|s| s.get("finalizers"))))
}

/// True when `metadata.deletionTimestamp` is set.
pub(crate) fn is_being_deleted(object: &Value) -> bool {
    !meta_str(object, "deletionTimestamp").is_empty()
}

/// The uids of `metadata.ownerReferences`.
pub(crate) fn owner_uids(object: &Value) -> BTreeSet<String> {
    metadata(object)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .filter(|uid| !uid.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_resource_version(object: &mut Value, revision: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".to_string(),
            Value::String(revision.to_string()),
        );
    }
}

/// Checks the body against the key and fills in what the key decides:
/// `apiVersion`, `kind`, `metadata.name` (when `name` is given) and
/// `metadata.namespace` (removed for cluster-scoped kinds).
fn reconcile_identity(kind: Kind, namespace: &str, object: &mut Value) -> Result<(), StoreError> {
    let Value::Object(map) = object else {
        return Err(StoreError::invalid("the object must be a JSON object"));
    };
    for (field, expected) in [("apiVersion", kind.api_version()), ("kind", kind.name())] {
        match map.get(field) {
            None | Some(Value::Null) => {
                map.insert(field.to_string(), Value::String(expected.to_string()));
            }
            Some(Value::String(s)) if s == expected => {}
            Some(Value::String(s)) if s.is_empty() => {
                map.insert(field.to_string(), Value::String(expected.to_string()));
            }
            Some(other) => {
                return Err(StoreError::invalid(format!(
                    "{field} {other} does not match the {} being written ({expected})",
                    kind.info().plural
                )));
            }
        }
    }
    let meta = metadata_mut(object)?;
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != namespace => {
            return Err(StoreError::invalid(format!(
                "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({namespace})"
            )));
        }
        _ => {}
    }
    if kind.namespaced() {
        meta.insert(
            "namespace".to_string(),
            Value::String(namespace.to_string()),
        );
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// The name in the body, `""` if none.
fn body_name(object: &Value) -> Result<String, StoreError> {
    match metadata(object).and_then(|m| m.get("name")) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(StoreError::invalid(format!(
            "metadata.name must be a string, not {other}"
        ))),
    }
}

/// Checks that the body's name (if any) matches the key's.
fn check_name(key: &ObjectKey, object: &Value) -> Result<(), StoreError> {
    let name = body_name(object)?;
    if !name.is_empty() && name != key.name {
        return Err(StoreError::invalid(format!(
            "the name of the object ({name}) does not match the name on the request ({})",
            key.name
        )));
    }
    Ok(())
}

/// How a created object gets its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameSource {
    /// The name is fixed.
    Fixed(String),
    /// Generate `prefix` + random suffix.
    Generate(String),
}

/// Prepares a body for create: checks it against the key, strips the
/// server-set fields and decides where the name comes from. The writer then
/// picks the name, uid, timestamps and revision ([`finish_create`]).
pub(crate) fn prepare_create(
    key: &ObjectKey,
    mut object: Value,
) -> Result<(Value, NameSource), StoreError> {
    validate_key(key, true)?;
    reconcile_identity(key.kind, &key.namespace, &mut object)?;
    let name = if key.name.is_empty() {
        body_name(&object)?
    } else {
        check_name(key, &object)?;
        key.name.clone()
    };
    let meta = metadata_mut(&mut object)?;
    for field in SERVER_FIELDS {
        meta.remove(field);
    }
    let source = if !name.is_empty() {
        NameSource::Fixed(name)
    } else {
        let prefix = match meta.get("generateName") {
            Some(Value::String(prefix)) if !prefix.is_empty() => prefix.clone(),
            _ => {
                return Err(StoreError::invalid(format!(
                    "{}: metadata.name or metadata.generateName is required",
                    key.kind.info().plural
                )))
            }
        };
        let prefix: String = prefix.chars().take(MAX_GENERATE_PREFIX_LEN).collect();
        NameSource::Generate(prefix)
    };
    if let NameSource::Fixed(name) = &source {
        validate_key(
            &ObjectKey {
                kind: key.kind,
                namespace: key.namespace.clone(),
                name: name.clone(),
            },
            false,
        )?;
    }
    Ok((object, source))
}

/// A random name from a `generateName` prefix.
pub(crate) fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut name = String::with_capacity(prefix.len() + GENERATED_SUFFIX_LEN);
    name.push_str(prefix);
    for _ in 0..GENERATED_SUFFIX_LEN {
        let index = rng.random_range(0..SUFFIX_ALPHABET.len());
        name.push(char::from(SUFFIX_ALPHABET[index]));
    }
    name
}

/// Sets what create decides: name, uid, creation time, generation 1 (the
/// writer sets resourceVersion).
pub(crate) fn finish_create(object: &mut Value, name: &str) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("name".into(), Value::String(name.to_string()));
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        meta.insert("generation".into(), Value::from(1));
    }
}

/// The result of preparing a write against the stored object.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    /// Nothing would change: do not write.
    Unchanged,
    /// The new object, without `resourceVersion` (the writer sets it).
    Changed(Value),
}

/// `object` without `resourceVersion`, for comparisons.
fn without_resource_version(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    copy
}

/// `object` without `metadata` and `status`: what `generation` tracks.
fn generation_relevant(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// Prepares an update: the body replaces the stored object except for the
/// server-owned metadata and (for kinds with one) `status`; `generation`
/// moves when anything outside `metadata` and `status` changed.
pub(crate) fn prepare_update(
    key: &ObjectKey,
    stored: &Value,
    mut object: Value,
) -> Result<Change, StoreError> {
    validate_key(key, false)?;
    reconcile_identity(key.kind, &key.namespace, &mut object)?;
    check_name(key, &object)?;
    let stored_meta = metadata(stored).cloned().unwrap_or_default();
    let meta = metadata_mut(&mut object)?;
    meta.insert("name".into(), Value::String(key.name.clone()));
    meta.remove("resourceVersion");
    for field in KEPT_ON_UPDATE {
        match stored_meta.get(field) {
            Some(value) => meta.insert(field.to_string(), value.clone()),
            None => meta.remove(field),
        };
    }
    let stored_generation = stored_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    meta.insert("generation".into(), Value::from(stored_generation));
    if kind_has_status(key.kind) {
        if let Value::Object(map) = &mut object {
            match stored.get("status") {
                Some(status) => map.insert("status".to_string(), status.clone()),
                None => map.remove("status"),
            };
        }
    }
    if object == without_resource_version(stored) {
        return Ok(Change::Unchanged);
    }
    if generation_relevant(&object) != generation_relevant(stored) {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "generation".into(),
                Value::from(stored_generation.saturating_add(1)),
            );
        }
    }
    Ok(Change::Changed(object))
}

/// Prepares an update of the object and its status at once (as
/// Kubernetes' pod binding sets `spec.nodeName` and the `PodScheduled`
/// condition in one write): [`prepare_update`], then `status` replaces the
/// stored one (`null` removes it).
pub(crate) fn prepare_update_with_status(
    key: &ObjectKey,
    stored: &Value,
    object: Value,
    status: Value,
) -> Result<Change, StoreError> {
    let updated = match prepare_update(key, stored, object)? {
        Change::Unchanged => without_resource_version(stored),
        Change::Changed(new) => new,
    };
    let with_status = match prepare_status_update(key, &updated, status)? {
        Change::Unchanged => updated,
        Change::Changed(new) => new,
    };
    if with_status == without_resource_version(stored) {
        return Ok(Change::Unchanged);
    }
    Ok(Change::Changed(with_status))
}

/// Prepares a status update: only `status` changes (`null` removes it).
pub(crate) fn prepare_status_update(
    key: &ObjectKey,
    stored: &Value,
    status: Value,
) -> Result<Change, StoreError> {
    if !kind_has_status(key.kind) {
        return Err(StoreError::invalid(format!(
            "{} have no status",
            key.kind.info().plural
        )));
    }
    let mut object = without_resource_version(stored);
    let Value::Object(map) = &mut object else {
        return Err(StoreError::Storage(format!(
            "the stored {} is not a JSON object",
            key
        )));
    };
    if status.is_null() {
        map.remove("status");
    } else {
        map.insert("status".to_string(), status);
    }
    if object == without_resource_version(stored) {
        return Ok(Change::Unchanged);
    }
    Ok(Change::Changed(object))
}

/// Marks an object as being deleted (it has finalizers, or it is a pod its
/// node must stop first): sets `deletionTimestamp` (kept when already set),
/// `deletionGracePeriodSeconds` and, as Kubernetes does for graceful
/// deletion, bumps `generation`.
pub(crate) fn mark_deleting(stored: &Value, grace_seconds: i64) -> Value {
    let mut object = without_resource_version(stored);
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if !meta.get("deletionTimestamp").is_some_and(Value::is_string) {
            meta.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
        }
        meta.insert(
            "deletionGracePeriodSeconds".into(),
            Value::from(grace_seconds),
        );
        let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        meta.insert(
            "generation".into(),
            Value::from(generation.saturating_add(1)),
        );
    }
    object
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Pod, "default", name)
    }

    #[test]
    fn timestamps_have_whole_seconds() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-24T05:11:05Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn create_strips_server_fields_and_checks_identity() {
        let body = json!({"metadata": {"name": "web", "uid": "x", "resourceVersion": "9",
            "generation": 7, "deletionTimestamp": "2020-01-01T00:00:00Z"}, "spec": {}});
        let (object, source) = prepare_create(&pod_key("web"), body).expect("valid");
        assert_eq!(source, NameSource::Fixed("web".into()));
        assert_eq!(object["apiVersion"], "v1");
        assert_eq!(object["kind"], "Pod");
        assert_eq!(object["metadata"]["namespace"], "default");
        for field in SERVER_FIELDS {
            assert!(object["metadata"].get(field).is_none(), "{field}");
        }
        let wrong_name = json!({"metadata": {"name": "other"}});
        assert!(matches!(
            prepare_create(&pod_key("web"), wrong_name),
            Err(StoreError::Invalid { .. })
        ));
        let wrong_ns = json!({"metadata": {"name": "web", "namespace": "kube-system"}});
        assert!(matches!(
            prepare_create(&pod_key("web"), wrong_ns),
            Err(StoreError::Invalid { .. })
        ));
        let wrong_kind = json!({"kind": "Service", "metadata": {"name": "web"}});
        assert!(matches!(
            prepare_create(&pod_key("web"), wrong_kind),
            Err(StoreError::Invalid { .. })
        ));
        let no_name = json!({"metadata": {}});
        assert!(matches!(
            prepare_create(&pod_key(""), no_name),
            Err(StoreError::Invalid { .. })
        ));
        let node = ObjectKey::new(Kind::Node, "", "pi");
        let (object, _) =
            prepare_create(&node, json!({"metadata": {"name": "pi", "namespace": ""}}))
                .expect("valid");
        assert!(object["metadata"].get("namespace").is_none());
        assert!(validate_key(&ObjectKey::new(Kind::Pod, "", "x"), false).is_err());
        assert!(validate_key(&ObjectKey::new(Kind::Node, "a", "x"), false).is_err());
        assert!(validate_key(&ObjectKey::new(Kind::Pod, "a", "x/y"), false).is_err());
    }

    #[test]
    fn generated_names_use_the_prefix_and_a_short_suffix() {
        let (_, source) =
            prepare_create(&pod_key(""), json!({"metadata": {"generateName": "web-"}}))
                .expect("valid");
        assert_eq!(source, NameSource::Generate("web-".into()));
        let name = generate_name("web-");
        assert!(name.starts_with("web-"));
        let suffix = &name[4..];
        assert_eq!(suffix.len(), GENERATED_SUFFIX_LEN);
        assert!(suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }

    fn stored_pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1,
                "resourceVersion": "5", "labels": {"a": "1"}},
            "spec": {"image": "nginx"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn update_keeps_server_fields_and_status_and_bumps_generation_on_spec_change() {
        let stored = stored_pod();
        let mut body = stored.clone();
        body["metadata"]["uid"] = json!("forged");
        body["metadata"]["generation"] = json!(40);
        body["status"] = json!({"phase": "Failed"});
        assert_eq!(
            prepare_update(&pod_key("web"), &stored, body).expect("valid"),
            Change::Unchanged,
            "forged uid/generation and a status change are ignored: no-op"
        );

        let mut labels = stored.clone();
        labels["metadata"]["labels"]["b"] = json!("2");
        let Change::Changed(new) = prepare_update(&pod_key("web"), &stored, labels).expect("ok")
        else {
            panic!("label change is a change");
        };
        assert_eq!(new["metadata"]["generation"], 1, "metadata-only change");
        assert_eq!(new["status"]["phase"], "Running");

        let mut spec = stored.clone();
        spec["spec"]["image"] = json!("caddy");
        spec["status"] = json!(null);
        let Change::Changed(new) = prepare_update(&pod_key("web"), &stored, spec).expect("ok")
        else {
            panic!("spec change is a change");
        };
        assert_eq!(new["metadata"]["generation"], 2);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["status"]["phase"], "Running", "status kept");
        assert!(new["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn update_of_kinds_without_status_replaces_everything() {
        let key = ObjectKey::new(Kind::ConfigMap, "default", "cfg");
        let stored = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "uid": "u", "generation": 1,
                "resourceVersion": "3"}, "data": {"a": "1"}});
        let body = json!({"metadata": {"name": "cfg"}, "data": {"a": "2"}});
        let Change::Changed(new) = prepare_update(&key, &stored, body).expect("ok") else {
            panic!("data change is a change");
        };
        assert_eq!(new["data"]["a"], "2");
        assert!(prepare_status_update(&key, &stored, json!({})).is_err());
    }

    #[test]
    fn status_update_changes_only_status() {
        let stored = stored_pod();
        assert_eq!(
            prepare_status_update(&pod_key("web"), &stored, json!({"phase": "Running"}))
                .expect("ok"),
            Change::Unchanged
        );
        let Change::Changed(new) =
            prepare_status_update(&pod_key("web"), &stored, json!({"phase": "Failed"}))
                .expect("ok")
        else {
            panic!("status change is a change");
        };
        assert_eq!(new["status"]["phase"], "Failed");
        assert_eq!(new["metadata"]["generation"], 1);
        assert_eq!(new["spec"], stored["spec"]);
    }

    #[test]
    fn owner_uids_are_collected() {
        let object = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "a"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs2", "uid": "b"}]}});
        let uids: Vec<_> = owner_uids(&object).into_iter().collect();
        assert_eq!(uids, ["a", "b"]);
    }
}

//! The three patch formats of the PATCH verb, applied to objects in
//! Kubernetes' JSON shape:
//!
//! - [`json_merge_patch`]: RFC 7386 (`application/merge-patch+json`);
//! - [`strategic_merge_patch`]: Kubernetes' strategic merge patch
//!   (`application/strategic-merge-patch+json`), what `kubectl apply` and a
//!   plain `kubectl patch` send;
//! - [`json_patch`]: RFC 6902 (`application/json-patch+json`,
//!   `kubectl patch --type json`).
//!
//! The strategic merge patch needs to know, for each list field, whether it
//! is replaced wholesale or merged (and by which key). Kubernetes reads that
//! from Go struct tags; here it is the small table [`KIND_LISTS`] (plus
//! [`COMMON_LISTS`] and [`POD_SPEC_LISTS`]), so supporting a new kind is one
//! line.

use std::collections::BTreeSet;
use std::fmt;

use bramble_common::Kind;
use serde_json::{Map, Value};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// A `$`-prefixed key the strategic merge patch does not know.
    #[error("strategic merge patch: unknown directive {directive:?} at {path}")]
    UnknownDirective {
        /// The offending key, e.g. `$foo`.
        directive: String,
        /// Where it was found, e.g. `spec.containers[0]`.
        path: String,
    },
    /// A malformed strategic merge patch.
    #[error("strategic merge patch: {reason} at {path}")]
    InvalidStrategic {
        /// What is wrong, in lowercase.
        reason: String,
        /// Where, e.g. `spec.template.spec.containers[1]`.
        path: String,
    },
    /// A JSON patch `test` operation whose value did not match.
    #[error("json patch: test failed at {path}")]
    TestFailed {
        /// The JSON pointer tested.
        path: String,
    },
    /// A JSON patch operation on a location that must exist but does not.
    #[error("json patch: path {path} does not exist")]
    PathNotFound {
        /// The JSON pointer.
        path: String,
    },
    /// A malformed JSON patch.
    #[error("json patch: {0}")]
    InvalidJsonPatch(String),
}

// ---------------------------------------------------------------------------
// RFC 7386
// ---------------------------------------------------------------------------

/// Apply an RFC 7386 JSON merge patch to `target` in place: `null` deletes a
/// member, objects merge recursively, anything else (arrays included)
/// replaces.
pub fn json_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                json_merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Strategic merge patch: the schema table
// ---------------------------------------------------------------------------

/// How a list field is patched by a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// The patch list replaces the original (the default).
    Replace,
    /// A list of objects merged item by item on this key.
    MergeByKey(&'static str),
    /// A list of primitives merged as a set union.
    MergePrimitive,
}

use ListStrategy::{MergeByKey as Key, MergePrimitive as Union};

/// A table of list fields, by dotted path, and how each is patched.
type ListTable = &'static [(&'static str, ListStrategy)];

/// Merge lists every kind has, by path from the object root.
const COMMON_LISTS: ListTable = &[
    ("metadata.ownerReferences", Key("uid")),
    ("metadata.finalizers", Union),
];

/// Merge lists of a PodSpec, by path from the PodSpec.
const POD_SPEC_LISTS: ListTable = &[
    ("containers", Key("name")),
    ("containers.ports", Key("containerPort")),
    ("containers.env", Key("name")),
    ("containers.volumeMounts", Key("mountPath")),
    ("initContainers", Key("name")),
    ("initContainers.ports", Key("containerPort")),
    ("initContainers.env", Key("name")),
    ("initContainers.volumeMounts", Key("mountPath")),
    ("volumes", Key("name")),
    ("imagePullSecrets", Key("name")),
];

/// Per kind: where its PodSpec lives (if it has one) and its own merge lists,
/// by path from the object root. Kinds not listed only have [`COMMON_LISTS`].
const KIND_LISTS: &[(Kind, Option<&str>, ListTable)] = &[
    (
        Kind::Pod,
        Some("spec"),
        &[
            ("status.conditions", Key("type")),
            ("status.podIPs", Key("ip")),
        ],
    ),
    (
        Kind::Deployment,
        Some("spec.template.spec"),
        &[("status.conditions", Key("type"))],
    ),
    (
        Kind::ReplicaSet,
        Some("spec.template.spec"),
        &[("status.conditions", Key("type"))],
    ),
    (
        Kind::DaemonSet,
        Some("spec.template.spec"),
        &[("status.conditions", Key("type"))],
    ),
    (Kind::Service, None, &[("spec.ports", Key("port"))]),
    (
        Kind::Node,
        None,
        &[
            ("status.conditions", Key("type")),
            ("status.addresses", Key("type")),
            ("spec.podCIDRs", Union),
        ],
    ),
];

/// The strategy for the list at `path` (field names from the object root,
/// joined with dots, list indices left out).
fn list_strategy(kind: Kind, path: &str) -> ListStrategy {
    let lookup = |table: &[(&str, ListStrategy)], path: &str| {
        table.iter().find(|(p, _)| *p == path).map(|(_, s)| *s)
    };
    if let Some(strategy) = lookup(COMMON_LISTS, path) {
        return strategy;
    }
    for (k, pod_spec, lists) in KIND_LISTS {
        if *k != kind {
            continue;
        }
        if let Some(strategy) = lookup(lists, path) {
            return strategy;
        }
        let in_pod_spec = pod_spec
            .and_then(|prefix| path.strip_prefix(prefix))
            .and_then(|rest| rest.strip_prefix('.'));
        if let Some(strategy) = in_pod_spec.and_then(|rest| lookup(POD_SPEC_LISTS, rest)) {
            return strategy;
        }
    }
    ListStrategy::Replace
}

// ---------------------------------------------------------------------------
// Strategic merge patch: the engine
// ---------------------------------------------------------------------------

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// A location in the document, for schema look-ups and error messages.
#[derive(Debug, Clone, Default)]
struct Path(Vec<Seg>);

#[derive(Debug, Clone)]
enum Seg {
    Field(String),
    Index(usize),
}

impl Path {
    fn field(&self, name: &str) -> Path {
        let mut path = self.clone();
        path.0.push(Seg::Field(name.to_string()));
        path
    }

    fn index(&self, index: usize) -> Path {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// Field names only, joined with dots: the key into the schema table.
    fn schema_key(&self) -> String {
        let fields: Vec<&str> = self
            .0
            .iter()
            .filter_map(|seg| match seg {
                Seg::Field(name) => Some(name.as_str()),
                Seg::Index(_) => None,
            })
            .collect();
        fields.join(".")
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<root>");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Field(name) if i == 0 => f.write_str(name)?,
                Seg::Field(name) => write!(f, ".{name}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> PatchError {
    PatchError::InvalidStrategic {
        reason: reason.into(),
        path: path.to_string(),
    }
}

/// The outcome of merging a map: kept (possibly changed) or deleted by a
/// `$patch: delete` directive.
enum Merged {
    Keep(Map<String, Value>),
    Delete,
}

/// What a list field's patch may carry besides the list itself.
#[derive(Default, Clone, Copy)]
struct ListDirectives<'a> {
    /// `$setElementOrder/<field>`.
    order: Option<&'a [Value]>,
    /// `$deleteFromPrimitiveList/<field>`.
    delete: Option<&'a [Value]>,
}

/// Apply a Kubernetes strategic merge patch for an object of `kind`.
///
/// Maps merge recursively and `null` deletes a key. Lists of objects with a
/// merge key merge item by item on that key; `metadata.finalizers` (and the
/// other primitive merge lists) are unioned; every other list is replaced.
/// The directives `$patch` (`replace`, `delete`, `merge`), `$retainKeys`,
/// `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` are
/// honoured and never appear in the result; any other `$`-key is an error.
pub fn strategic_merge_patch(
    kind: Kind,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let root = Path::default();
    let Value::Object(patch) = patch else {
        return Err(invalid(&root, "patch must be a JSON object"));
    };
    let base = original.as_object().cloned().unwrap_or_default();
    let engine = Smp { kind };
    match engine.merge_map(&root, base, patch)? {
        Merged::Keep(map) => Ok(Value::Object(map)),
        Merged::Delete => Ok(Value::Object(Map::new())),
    }
}

struct Smp {
    kind: Kind,
}

impl Smp {
    /// Merge `patch` into `original`, honouring a `$patch` directive.
    fn merge_map(
        &self,
        path: &Path,
        original: Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<Merged, PatchError> {
        match patch.get(PATCH_DIRECTIVE) {
            None => self.merge_fields(path, original, patch),
            Some(directive) => match directive.as_str() {
                Some("merge") => self.merge_fields(path, original, patch),
                Some("replace") => self.merge_fields(path, Map::new(), patch),
                Some("delete") => Ok(Merged::Delete),
                _ => Err(invalid(path, format!("unknown $patch value {directive}"))),
            },
        }
    }

    /// Merge the fields of `patch` into `original` (the `$patch` key, if
    /// any, has already been dealt with).
    fn merge_fields(
        &self,
        path: &Path,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<Merged, PatchError> {
        let mut retain: Option<Vec<&str>> = None;
        let mut fields: BTreeSet<&str> = BTreeSet::new();
        for (key, value) in patch {
            if !key.starts_with('$') {
                fields.insert(key);
            } else if key == PATCH_DIRECTIVE {
                // Handled by merge_map.
            } else if key == RETAIN_KEYS {
                retain = Some(
                    string_list(value)
                        .ok_or_else(|| invalid(path, "$retainKeys must be a list of strings"))?,
                );
            } else if let Some(field) = key
                .strip_prefix(SET_ELEMENT_ORDER)
                .or_else(|| key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST))
                .filter(|field| !field.is_empty())
            {
                if !value.is_array() {
                    return Err(invalid(path, format!("{key} must be a list")));
                }
                fields.insert(field);
            } else {
                return Err(PatchError::UnknownDirective {
                    directive: key.clone(),
                    path: path.to_string(),
                });
            }
        }

        if let Some(retain) = retain {
            for (key, value) in patch {
                if !key.starts_with('$') && !value.is_null() && !retain.contains(&key.as_str()) {
                    return Err(invalid(
                        path,
                        format!("field {key:?} is not listed in $retainKeys"),
                    ));
                }
            }
            original.retain(|key, _| retain.contains(&key.as_str()));
        }

        for field in fields {
            let field_path = path.field(field);
            let directives = ListDirectives {
                order: list_directive(patch, SET_ELEMENT_ORDER, field),
                delete: list_directive(patch, DELETE_FROM_PRIMITIVE_LIST, field),
            };
            let has_directives = directives.order.is_some() || directives.delete.is_some();
            let current = original.remove(field);
            let merged = match patch.get(field) {
                Some(Value::Null) => None,
                Some(Value::Object(patch_map)) => {
                    if has_directives {
                        return Err(invalid(
                            &field_path,
                            "list directive for a field that is not a list",
                        ));
                    }
                    let base = match current {
                        Some(Value::Object(map)) => map,
                        _ => Map::new(),
                    };
                    match self.merge_map(&field_path, base, patch_map)? {
                        Merged::Keep(map) => Some(Value::Object(map)),
                        Merged::Delete => None,
                    }
                }
                Some(Value::Array(patch_list)) => {
                    let base = match current {
                        Some(Value::Array(list)) => list,
                        _ => Vec::new(),
                    };
                    let list = self.merge_list(&field_path, base, Some(patch_list), directives)?;
                    Some(Value::Array(list))
                }
                Some(scalar) => {
                    if has_directives {
                        return Err(invalid(
                            &field_path,
                            "list directive for a field that is not a list",
                        ));
                    }
                    Some(scalar.clone())
                }
                // Only directives for this field: apply them to what is there.
                None => match current {
                    Some(Value::Array(list)) => Some(Value::Array(self.merge_list(
                        &field_path,
                        list,
                        None,
                        directives,
                    )?)),
                    // Nothing to order or delete from, but check the directives.
                    None => {
                        self.merge_list(&field_path, Vec::new(), None, directives)?;
                        None
                    }
                    other => other,
                },
            };
            if let Some(value) = merged {
                original.insert(field.to_string(), value);
            }
        }
        Ok(Merged::Keep(original))
    }

    /// Merge a patch list (absent when the patch only carries directives for
    /// the field) into `original`.
    fn merge_list(
        &self,
        path: &Path,
        original: Vec<Value>,
        patch: Option<&Vec<Value>>,
        directives: ListDirectives<'_>,
    ) -> Result<Vec<Value>, PatchError> {
        let strategy = list_strategy(self.kind, &path.schema_key());
        let items: &[Value] = patch.map(Vec::as_slice).unwrap_or_default();
        let replace_all = items.iter().any(|item| is_replace_marker(item, strategy));

        let mut result = if replace_all || (strategy == ListStrategy::Replace && patch.is_some()) {
            self.fresh_list(path, items, strategy)?
        } else {
            match strategy {
                ListStrategy::Replace => {
                    let mut list = original;
                    if let Some(delete) = directives.delete {
                        list.retain(|value| !delete.contains(value));
                    }
                    list
                }
                ListStrategy::MergePrimitive => {
                    let mut list = original;
                    if let Some(delete) = directives.delete {
                        list.retain(|value| !delete.contains(value));
                    }
                    for (i, item) in items.iter().enumerate() {
                        if item.is_object() || item.is_array() {
                            return Err(invalid(&path.index(i), "expected a primitive value"));
                        }
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                    list
                }
                ListStrategy::MergeByKey(key) => {
                    if directives.delete.is_some() {
                        return Err(invalid(
                            path,
                            "$deleteFromPrimitiveList used on a list of objects",
                        ));
                    }
                    self.merge_keyed(path, original, items, key)?
                }
            }
        };

        if let Some(order) = directives.order {
            result = reorder(path, result, order, strategy)?;
        }
        Ok(result)
    }

    /// Merge the items of a list of objects by `key`.
    fn merge_keyed(
        &self,
        path: &Path,
        mut list: Vec<Value>,
        items: &[Value],
        key: &str,
    ) -> Result<Vec<Value>, PatchError> {
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Value::Object(item_map) = item else {
                return Err(invalid(
                    &item_path,
                    format!("expected an object with merge key {key:?}"),
                ));
            };
            let Some(key_value) = item_map.get(key) else {
                if let Some(directive) = item_map.get(PATCH_DIRECTIVE) {
                    if !matches!(directive.as_str(), Some("merge" | "replace" | "delete")) {
                        return Err(invalid(
                            &item_path,
                            format!("unknown $patch value {directive}"),
                        ));
                    }
                }
                return Err(invalid(&item_path, format!("missing merge key {key:?}")));
            };
            let position = list.iter().position(|v| v.get(key) == Some(key_value));
            let base = match position.map(|p| std::mem::take(&mut list[p])) {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            match self.merge_map(&item_path, base, item_map)? {
                Merged::Keep(map) => match position {
                    Some(p) => list[p] = Value::Object(map),
                    None => list.push(Value::Object(map)),
                },
                Merged::Delete => {
                    if let Some(p) = position {
                        list.remove(p);
                    }
                    list.retain(|v| v.get(key) != Some(key_value));
                }
            }
        }
        Ok(list)
    }

    /// The items of a patch list taken as they are (a replaced list, or the
    /// rest of a list carrying `{"$patch": "replace"}`), with their
    /// directives applied and removed.
    fn fresh_list(
        &self,
        path: &Path,
        items: &[Value],
        strategy: ListStrategy,
    ) -> Result<Vec<Value>, PatchError> {
        let mut list = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if is_replace_marker(item, strategy) {
                continue;
            }
            if let Some(value) = self.fresh(&path.index(i), item)? {
                list.push(value);
            }
        }
        Ok(list)
    }

    /// A patch value with nothing to merge into: directives applied and
    /// removed, nulls dropped. `None` when it deletes itself.
    fn fresh(&self, path: &Path, value: &Value) -> Result<Option<Value>, PatchError> {
        match value {
            Value::Object(map) => match self.merge_map(path, Map::new(), map)? {
                Merged::Keep(map) => Ok(Some(Value::Object(map))),
                Merged::Delete => Ok(None),
            },
            Value::Array(items) => {
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(value) = self.fresh(&path.index(i), item)? {
                        list.push(value);
                    }
                }
                Ok(Some(Value::Array(list)))
            }
            scalar => Ok(Some(scalar.clone())),
        }
    }
}

/// True for the list element that turns a merge into a replacement of the
/// whole list: `{"$patch": "replace"}` (in a list of objects with a merge
/// key: any element with `$patch: replace` but no merge key).
fn is_replace_marker(item: &Value, strategy: ListStrategy) -> bool {
    let Value::Object(map) = item else {
        return false;
    };
    let is_replace = map.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("replace");
    match strategy {
        ListStrategy::MergeByKey(key) => is_replace && !map.contains_key(key),
        _ => is_replace && map.len() == 1,
    }
}

/// Reorder `list` after `$setElementOrder`: the items it names first, in
/// its order, then every other item in its current relative order.
fn reorder(
    path: &Path,
    list: Vec<Value>,
    order: &[Value],
    strategy: ListStrategy,
) -> Result<Vec<Value>, PatchError> {
    let mut ids = Vec::with_capacity(order.len());
    for (i, entry) in order.iter().enumerate() {
        match strategy {
            ListStrategy::MergeByKey(key) => match entry.get(key) {
                Some(id) => ids.push(id),
                None => {
                    return Err(invalid(
                        path,
                        format!("$setElementOrder entry {i} has no merge key {key:?}"),
                    ))
                }
            },
            _ => ids.push(entry),
        }
    }
    let rank = |item: &Value| {
        let id = match strategy {
            ListStrategy::MergeByKey(key) => item.get(key),
            _ => Some(item),
        };
        id.and_then(|id| ids.iter().position(|candidate| *candidate == id))
            .unwrap_or(usize::MAX)
    };
    let mut ranked: Vec<(usize, Value)> =
        list.into_iter().map(|item| (rank(&item), item)).collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    Ok(ranked.into_iter().map(|(_, item)| item).collect())
}

fn list_directive<'a>(
    patch: &'a Map<String, Value>,
    prefix: &str,
    field: &str,
) -> Option<&'a [Value]> {
    patch
        .get(&format!("{prefix}{field}"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
}

fn string_list(value: &Value) -> Option<Vec<&str>> {
    value.as_array()?.iter().map(Value::as_str).collect()
}

// ---------------------------------------------------------------------------
// RFC 6902
// ---------------------------------------------------------------------------

/// Apply an RFC 6902 JSON patch (a list of `add`, `remove`, `replace`,
/// `move`, `copy` and `test` operations) to a copy of `target`. The patch is
/// atomic: on any error `target` is left as it was.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations = patch.as_array().ok_or_else(|| {
        PatchError::InvalidJsonPatch("patch must be a JSON array of operations".into())
    })?;
    let mut document = target.clone();
    for (index, operation) in operations.iter().enumerate() {
        apply_operation(&mut document, index, operation)?;
    }
    Ok(document)
}

fn apply_operation(
    document: &mut Value,
    index: usize,
    operation: &Value,
) -> Result<(), PatchError> {
    let bad = |message: String| PatchError::InvalidJsonPatch(message);
    let operation = operation
        .as_object()
        .ok_or_else(|| bad(format!("operation {index} is not an object")))?;
    let op = operation
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("operation {index} has no \"op\"")))?;
    let member = |name: &str| {
        operation
            .get(name)
            .ok_or_else(|| bad(format!("operation {index} ({op}) is missing {name:?}")))
    };
    let pointer_member = |name: &str| -> Result<(&str, Vec<String>), PatchError> {
        let raw = member(name)?.as_str().ok_or_else(|| {
            bad(format!(
                "operation {index} ({op}): {name:?} must be a string"
            ))
        })?;
        Ok((raw, parse_pointer(raw)?))
    };

    match op {
        "add" => {
            let (raw, path) = pointer_member("path")?;
            add(document, raw, &path, member("value")?.clone())
        }
        "remove" => {
            let (raw, path) = pointer_member("path")?;
            remove(document, raw, &path).map(drop)
        }
        "replace" => {
            let (raw, path) = pointer_member("path")?;
            let value = member("value")?.clone();
            let slot = get_mut(document, &path).ok_or_else(|| not_found(raw))?;
            *slot = value;
            Ok(())
        }
        "move" => {
            let (raw, path) = pointer_member("path")?;
            let (raw_from, from) = pointer_member("from")?;
            if from == path {
                return get(document, &from)
                    .map(drop)
                    .ok_or_else(|| not_found(raw_from));
            }
            if path.starts_with(&from) {
                return Err(bad(format!(
                    "cannot move {raw_from} into its own child {raw}"
                )));
            }
            let value = remove(document, raw_from, &from)?;
            add(document, raw, &path, value)
        }
        "copy" => {
            let (raw, path) = pointer_member("path")?;
            let (raw_from, from) = pointer_member("from")?;
            let value = get(document, &from)
                .cloned()
                .ok_or_else(|| not_found(raw_from))?;
            add(document, raw, &path, value)
        }
        "test" => {
            let (raw, path) = pointer_member("path")?;
            let expected = member("value")?;
            let actual = get(document, &path).ok_or_else(|| not_found(raw))?;
            if json_equal(actual, expected) {
                Ok(())
            } else {
                Err(PatchError::TestFailed {
                    path: raw.to_string(),
                })
            }
        }
        other => Err(bad(format!("unknown operation {other:?}"))),
    }
}

fn not_found(path: &str) -> PatchError {
    PatchError::PathNotFound {
        path: path.to_string(),
    }
}

/// Split a JSON pointer (RFC 6901) into unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(PatchError::InvalidJsonPatch(format!(
            "invalid path {pointer:?}: must be empty or start with '/'"
        )));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(PatchError::InvalidJsonPatch(format!(
                            "invalid path {pointer:?}: '~' must be followed by '0' or '1'"
                        )))
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: decimal digits without leading zeros.
fn array_index(token: &str) -> Option<usize> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if valid {
        token.parse().ok()
    } else {
        None
    }
}

fn get<'a>(document: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(document, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(list) => list.get(array_index(token)?),
        _ => None,
    })
}

fn get_mut<'a>(document: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(document, |value, token| match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(list) => list.get_mut(array_index(token)?),
        _ => None,
    })
}

fn add(document: &mut Value, raw: &str, path: &[String], value: Value) -> Result<(), PatchError> {
    let Some((last, parent_path)) = path.split_last() else {
        *document = value;
        return Ok(());
    };
    match get_mut(document, parent_path) {
        Some(Value::Object(map)) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(list)) => {
            if last == "-" {
                list.push(value);
                return Ok(());
            }
            let index = array_index(last).ok_or_else(|| {
                PatchError::InvalidJsonPatch(format!("invalid array index {last:?} in {raw}"))
            })?;
            if index > list.len() {
                return Err(PatchError::InvalidJsonPatch(format!(
                    "array index {index} is out of bounds in {raw}"
                )));
            }
            list.insert(index, value);
            Ok(())
        }
        _ => Err(not_found(raw)),
    }
}

fn remove(document: &mut Value, raw: &str, path: &[String]) -> Result<Value, PatchError> {
    let Some((last, parent_path)) = path.split_last() else {
        return Err(PatchError::InvalidJsonPatch(
            "cannot remove the whole document".into(),
        ));
    };
    match get_mut(document, parent_path) {
        Some(Value::Object(map)) => map.remove(last).ok_or_else(|| not_found(raw)),
        Some(Value::Array(list)) => match array_index(last) {
            Some(index) if index < list.len() => Ok(list.remove(index)),
            _ => Err(not_found(raw)),
        },
        _ => Err(not_found(raw)),
    }
}

/// JSON equality as RFC 6902 `test` defines it: numbers compare by value
/// (`1` equals `1.0`), objects regardless of member order.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, xv)| y.get(key).is_some_and(|yv| json_equal(xv, yv)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: Kind, original: Value, patch: Value) -> Value {
        strategic_merge_patch(kind, &original, &patch).expect("patch applies")
    }

    fn smp_err(kind: Kind, original: Value, patch: Value) -> String {
        strategic_merge_patch(kind, &original, &patch)
            .expect_err("patch fails")
            .to_string()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "finalizers": ["a.example/one"]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "nginx:1.25",
                                "args": ["--a", "--b"],
                                "ports": [{"containerPort": 80, "name": "http"}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                            },
                            {"name": "sidecar", "image": "busybox:1.36"}
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}]
                    }
                }
            }
        })
    }

    fn containers(object: &Value) -> &Vec<Value> {
        object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
    }

    fn names(list: &[Value]) -> Vec<&str> {
        list.iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect()
    }

    fn no_directives(value: &Value) -> bool {
        match value {
            Value::Object(map) => map
                .iter()
                .all(|(k, v)| !k.starts_with('$') && no_directives(v)),
            Value::Array(items) => items.iter().all(no_directives),
            _ => true,
        }
    }

    // --- what kubectl apply sends ------------------------------------------

    #[test]
    fn kubectl_apply_changes_an_image() {
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":1}"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:1.26", "name": "web"}]
            }}}
        });
        let out = smp(Kind::Deployment, deployment(), patch);
        let cs = containers(&out);
        assert_eq!(names(cs), ["web", "sidecar"]);
        assert_eq!(cs[0]["image"], "nginx:1.26");
        // Everything else about the container is kept.
        assert_eq!(
            cs[0]["env"],
            deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
        );
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[1]["image"], "busybox:1.36");
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{\"new\":1}"
        );
        assert_eq!(out["spec"]["replicas"], 2);
        assert!(no_directives(&out));
    }

    #[test]
    fn kubectl_apply_removes_an_env_var() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}],
                "env": [{"$patch": "delete", "name": "B"}],
                "name": "web"
            }]
        }}}});
        let out = smp(Kind::Deployment, deployment(), patch);
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(containers(&out)[0]["image"], "nginx:1.25");
        assert!(no_directives(&out));
    }

    #[test]
    fn kubectl_apply_deletes_a_label_with_null() {
        let patch = json!({
            "metadata": {"labels": {"tier": null}},
            "spec": {"template": {"metadata": {"labels": {"tier": null}}}}
        });
        let out = smp(Kind::Deployment, deployment(), patch);
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web"})
        );
    }

    #[test]
    fn kubectl_apply_adds_a_container_in_order() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}, {"name": "sidecar"}],
            "containers": [{"image": "fluent-bit:3", "name": "log", "env": [{"name": "X", "value": null}]}]
        }}}});
        let out = smp(Kind::Deployment, deployment(), patch);
        let cs = containers(&out);
        assert_eq!(names(cs), ["web", "log", "sidecar"]);
        // A new item is taken as given, minus nulls.
        assert_eq!(
            cs[1],
            json!({"name": "log", "image": "fluent-bit:3", "env": [{"name": "X"}]})
        );
    }

    #[test]
    fn kubectl_apply_switches_strategy_with_retain_keys() {
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "rollingUpdate": null,
            "type": "Recreate"
        }}});
        let out = smp(Kind::Deployment, deployment(), patch);
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_in_a_merged_volume() {
        let patch = json!({"spec": {"template": {"spec": {"volumes": [{
            "$retainKeys": ["configMap", "name"],
            "configMap": {"name": "settings"},
            "name": "data"
        }]}}}});
        let out = smp(Kind::Deployment, deployment(), patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "settings"}}])
        );
    }

    #[test]
    fn retain_keys_rejects_patch_fields_not_listed() {
        let err = smp_err(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
        );
        assert_eq!(
            err,
            "strategic merge patch: field \"rollingUpdate\" is not listed in $retainKeys at spec.strategy"
        );
        let err = smp_err(
            Kind::Pod,
            json!({}),
            json!({"spec": {"$retainKeys": "type"}}),
        );
        assert!(
            err.contains("$retainKeys must be a list of strings"),
            "{err}"
        );
    }

    // --- merge keys per kind -----------------------------------------------

    #[test]
    fn pod_ports_merge_on_container_port() {
        let original = json!({"spec": {"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "name": "http"}, {"containerPort": 443}
        ]}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "ports": [
            {"containerPort": 443, "name": "https"}, {"containerPort": 9090}
        ]}]}});
        let out = smp(Kind::Pod, original, patch);
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}, {"containerPort": 9090}])
        );
    }

    #[test]
    fn pod_init_containers_volume_mounts_and_pull_secrets_merge() {
        let original = json!({"spec": {
            "initContainers": [{"name": "init", "image": "a", "volumeMounts": [{"mountPath": "/x", "name": "v"}]}],
            "imagePullSecrets": [{"name": "one"}]
        }});
        let patch = json!({"spec": {
            "initContainers": [{"name": "init", "volumeMounts": [{"mountPath": "/x", "readOnly": true}, {"mountPath": "/y", "name": "w"}]}],
            "imagePullSecrets": [{"name": "two"}]
        }});
        let out = smp(Kind::Pod, original, patch);
        assert_eq!(
            out["spec"]["initContainers"][0],
            json!({"name": "init", "image": "a", "volumeMounts": [
                {"mountPath": "/x", "name": "v", "readOnly": true}, {"mountPath": "/y", "name": "w"}
            ]})
        );
        assert_eq!(
            out["spec"]["imagePullSecrets"],
            json!([{"name": "one"}, {"name": "two"}])
        );
    }

    #[test]
    fn merge_keys_of_other_kinds() {
        let svc = smp(
            Kind::Service,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
            json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
        );
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}])
        );

        let node = smp(
            Kind::Node,
            json!({"status": {
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]
            }}),
            json!({"status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletDown"}],
                "addresses": [{"type": "Hostname", "address": "pi-2"}]
            }}),
        );
        assert_eq!(
            node["status"]["conditions"],
            json!([{"type": "Ready", "status": "False", "reason": "KubeletDown"}, {"type": "DiskPressure", "status": "False"}])
        );
        assert_eq!(
            node["status"]["addresses"].as_array().map(Vec::len),
            Some(2)
        );

        let rs = smp(
            Kind::ReplicaSet,
            json!({"metadata": {"ownerReferences": [{"uid": "u1", "name": "a"}]}, "status": {"conditions": [{"type": "ReplicaFailure", "status": "True"}]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "u1", "controller": true}]}, "status": {"conditions": [{"type": "ReplicaFailure", "status": "False"}]}}),
        );
        assert_eq!(
            rs["metadata"]["ownerReferences"],
            json!([{"uid": "u1", "name": "a", "controller": true}])
        );
        assert_eq!(
            rs["status"]["conditions"],
            json!([{"type": "ReplicaFailure", "status": "False"}])
        );

        let ds = smp(
            Kind::DaemonSet,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}}),
        );
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}])
        );
    }

    #[test]
    fn merge_lists_are_not_merged_at_other_paths() {
        // A Service has no pod spec: its `spec.containers` (nonsense) is replaced,
        // and a Pod's status.conditions merge while a ConfigMap's would not.
        let out = smp(
            Kind::ConfigMap,
            json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}]}}),
            json!({"status": {"conditions": [{"type": "B", "x": 1}]}}),
        );
        assert_eq!(out["status"]["conditions"], json!([{"type": "B", "x": 1}]));
        let out = smp(
            Kind::Service,
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"name": "b"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "web", "args": ["--c"]}],
            "tolerations": [{"key": "k", "operator": "Exists"}]
        }}}});
        let mut original = deployment();
        original["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "old", "operator": "Exists"}]);
        let out = smp(Kind::Deployment, original, patch);
        assert_eq!(containers(&out)[0]["args"], json!(["--c"]));
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "k", "operator": "Exists"}])
        );
    }

    #[test]
    fn finalizers_are_unioned() {
        let out = smp(
            Kind::ConfigMap,
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        // Creates the list when missing.
        let out = smp(
            Kind::Secret,
            json!({"metadata": {}}),
            json!({"metadata": {"finalizers": ["x"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
        // Objects are not primitives.
        let err = smp_err(
            Kind::Pod,
            json!({}),
            json!({"metadata": {"finalizers": [{"a": 1}]}}),
        );
        assert_eq!(
            err,
            "strategic merge patch: expected a primitive value at metadata.finalizers[0]"
        );
    }

    #[test]
    fn delete_from_primitive_list() {
        let out = smp(
            Kind::Namespace,
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zzz"], "finalizers": ["d"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c", "d"]));
        // Without the list itself in the patch.
        let out = smp(
            Kind::Namespace,
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let err = smp_err(
            Kind::Pod,
            json!({}),
            json!({"metadata": {"$deleteFromPrimitiveList/ownerReferences": [{"uid": "x"}]}}),
        );
        assert!(
            err.contains("$deleteFromPrimitiveList used on a list of objects"),
            "{err}"
        );
    }

    #[test]
    fn set_element_order_alone_reorders() {
        let out = smp(
            Kind::Pod,
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}]}}),
        );
        // Unmentioned items follow, keeping their relative order.
        assert_eq!(
            names(out["spec"]["containers"].as_array().expect("list")),
            ["c", "a", "b", "d"]
        );
        let out = smp(
            Kind::Pod,
            json!({"metadata": {"finalizers": ["x", "y", "z"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["z", "x"], "finalizers": ["w"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["z", "x", "y", "w"]));
        let err = smp_err(
            Kind::Pod,
            json!({}),
            json!({"spec": {"$setElementOrder/containers": [{"image": "x"}]}}),
        );
        assert!(err.contains("has no merge key \"name\""), "{err}");
    }

    #[test]
    fn patch_replace_on_a_map() {
        let out = smp(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"selector": {"$patch": "replace", "matchLabels": {"app": "new"}}}}),
        );
        assert_eq!(
            out["spec"]["selector"],
            json!({"matchLabels": {"app": "new"}})
        );
    }

    #[test]
    fn patch_replace_on_a_list_element() {
        let out = smp(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"$patch": "replace", "name": "web", "image": "caddy:2"}
            ]}}}}),
        );
        assert_eq!(
            containers(&out)[0],
            json!({"name": "web", "image": "caddy:2"})
        );
        assert_eq!(names(containers(&out)), ["web", "sidecar"]);
    }

    #[test]
    fn patch_replace_element_replaces_the_whole_list() {
        let out = smp(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "solo", "image": "x"},
                {"$patch": "replace"}
            ]}}}}),
        );
        assert_eq!(
            containers(&out),
            &vec![json!({"name": "solo", "image": "x"})]
        );
        let out = smp(
            Kind::Pod,
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": [{"$patch": "replace"}, "c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c"]));
    }

    #[test]
    fn patch_delete_on_a_map_and_an_element() {
        let out = smp(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"strategy": {"$patch": "delete"}}}),
        );
        assert!(out["spec"].get("strategy").is_none());
        let out = smp(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}, {"name": "ghost", "$patch": "delete"}]}}}}),
        );
        assert_eq!(names(containers(&out)), ["web"]);
        let err = smp_err(
            Kind::Pod,
            json!({}),
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        );
        assert_eq!(
            err,
            "strategic merge patch: missing merge key \"name\" at spec.containers[0]"
        );
    }

    #[test]
    fn patch_merge_is_the_default() {
        let out = smp(
            Kind::ConfigMap,
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"$patch": "merge", "b": "3"}}),
        );
        assert_eq!(out["data"], json!({"a": "1", "b": "3"}));
    }

    #[test]
    fn top_level_directives() {
        let out = smp(
            Kind::ConfigMap,
            json!({"data": {"a": "1"}, "kind": "ConfigMap"}),
            json!({"$patch": "replace", "kind": "ConfigMap"}),
        );
        assert_eq!(out, json!({"kind": "ConfigMap"}));
        assert_eq!(
            smp(
                Kind::ConfigMap,
                json!({"a": 1}),
                json!({"$patch": "delete"})
            ),
            json!({})
        );
    }

    #[test]
    fn unknown_directives_are_errors() {
        let err = smp_err(
            Kind::Pod,
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"name": "a", "$foo": 1}]}}),
        );
        assert_eq!(
            err,
            "strategic merge patch: unknown directive \"$foo\" at spec.containers[0]"
        );
        let err = smp_err(Kind::Pod, json!({}), json!({"$bar": 1}));
        assert_eq!(
            err,
            "strategic merge patch: unknown directive \"$bar\" at <root>"
        );
        let err = smp_err(
            Kind::Pod,
            json!({}),
            json!({"metadata": {"$patch": "explode"}}),
        );
        assert_eq!(
            err,
            "strategic merge patch: unknown $patch value \"explode\" at metadata"
        );
        let err = smp_err(
            Kind::Pod,
            json!({}),
            json!({"spec": {"containers": [{"$patch": "nope"}]}}),
        );
        assert!(
            err.contains("unknown $patch value \"nope\" at spec.containers[0]"),
            "{err}"
        );
        // Directives are checked in new content too.
        let err = smp_err(Kind::Pod, json!({}), json!({"spec": {"x": {"$y": 1}}}));
        assert!(err.contains("unknown directive \"$y\" at spec.x"), "{err}");
        assert!(smp_err(Kind::Pod, json!({}), json!([1])).contains("patch must be a JSON object"));
    }

    #[test]
    fn directives_never_reach_the_result() {
        let out = smp(
            Kind::Pod,
            json!({}),
            json!({"spec": {
                "containers": [{"name": "a", "env": [{"name": "E", "$patch": "merge"}], "$setElementOrder/env": [{"name": "E"}]}],
                "tolerations": [{"$patch": "replace", "key": "k"}],
                "nested": {"$patch": "replace", "deep": {"$retainKeys": ["x"], "x": 1}}
            }}),
        );
        assert!(no_directives(&out), "{out}");
        assert_eq!(out["spec"]["containers"][0]["env"], json!([{"name": "E"}]));
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "k"}]));
    }

    #[test]
    fn type_changes_replace() {
        let out = smp(
            Kind::ConfigMap,
            json!({"a": [1], "b": {"c": 1}, "c": "s"}),
            json!({"a": {"x": 1}, "b": [2], "c": {"d": null, "e": 1}}),
        );
        assert_eq!(out, json!({"a": {"x": 1}, "b": [2], "c": {"e": 1}}));
    }

    #[test]
    fn list_strategy_table() {
        assert_eq!(list_strategy(Kind::Pod, "spec.containers"), Key("name"));
        assert_eq!(
            list_strategy(Kind::Deployment, "spec.template.spec.initContainers.env"),
            Key("name")
        );
        assert_eq!(
            list_strategy(Kind::Deployment, "spec.containers"),
            ListStrategy::Replace
        );
        assert_eq!(list_strategy(Kind::Event, "metadata.finalizers"), Union);
        assert_eq!(list_strategy(Kind::Node, "status.addresses"), Key("type"));
        assert_eq!(
            list_strategy(Kind::Pod, "spec.tolerations"),
            ListStrategy::Replace
        );
    }

    // --- RFC 7386 appendix A ------------------------------------------------

    #[test]
    fn rfc7386_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            let before = target.clone();
            json_merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "{before} + {patch}");
        }
    }

    #[test]
    fn rfc7386_section_3_example() {
        let mut target = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        json_merge_patch(&mut target, &patch);
        assert_eq!(
            target,
            json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
    }

    // --- RFC 6902 appendix A ------------------------------------------------

    fn jp(target: Value, patch: Value) -> Result<Value, String> {
        json_patch(&target, &patch).map_err(|e| e.to_string())
    }

    #[test]
    fn rfc6902_add() {
        // A.1, A.2, A.10, A.16
        assert_eq!(
            jp(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}])
            ),
            Ok(json!({"baz":"qux","foo":"bar"}))
        );
        assert_eq!(
            jp(
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}])
            ),
            Ok(json!({"foo":["bar","qux","baz"]}))
        );
        assert_eq!(
            jp(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}])
            ),
            Ok(json!({"foo":"bar","child":{"grandchild":{}}}))
        );
        assert_eq!(
            jp(
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}])
            ),
            Ok(json!({"foo":["bar",["abc","def"]]}))
        );
        // A.11: unrecognised members are ignored.
        assert_eq!(
            jp(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux","xyz":123}])
            ),
            Ok(json!({"foo":"bar","baz":"qux"}))
        );
        // Whole-document replacement and appending at len.
        assert_eq!(
            jp(json!({"a":1}), json!([{"op":"add","path":"","value":[1]}])),
            Ok(json!([1]))
        );
        assert_eq!(
            jp(json!([1]), json!([{"op":"add","path":"/1","value":2}])),
            Ok(json!([1, 2]))
        );
    }

    #[test]
    fn rfc6902_add_failures() {
        // A.12: adding to a nonexistent target.
        assert_eq!(
            jp(
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz/bat","value":"qux"}])
            ),
            Err("json patch: path /baz/bat does not exist".into())
        );
        assert_eq!(
            jp(
                json!({"a":[1]}),
                json!([{"op":"add","path":"/a/5","value":2}])
            ),
            Err("json patch: array index 5 is out of bounds in /a/5".into())
        );
        assert_eq!(
            jp(
                json!({"a":[1]}),
                json!([{"op":"add","path":"/a/01","value":2}])
            ),
            Err("json patch: invalid array index \"01\" in /a/01".into())
        );
        assert_eq!(
            jp(json!({}), json!([{"op":"add","path":"/a"}])),
            Err("json patch: operation 0 (add) is missing \"value\"".into())
        );
    }

    #[test]
    fn rfc6902_remove_and_replace() {
        // A.3, A.4, A.5
        assert_eq!(
            jp(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}])
            ),
            Ok(json!({"foo":"bar"}))
        );
        assert_eq!(
            jp(
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}])
            ),
            Ok(json!({"foo":["bar","baz"]}))
        );
        assert_eq!(
            jp(
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}])
            ),
            Ok(json!({"baz":"boo","foo":"bar"}))
        );
        assert_eq!(
            jp(
                json!({"spec":{}}),
                json!([{"op":"remove","path":"/spec/x"}])
            ),
            Err("json patch: path /spec/x does not exist".into())
        );
        assert_eq!(
            jp(json!({"a":[1]}), json!([{"op":"remove","path":"/a/1"}])),
            Err("json patch: path /a/1 does not exist".into())
        );
        assert_eq!(
            jp(
                json!({"spec":{}}),
                json!([{"op":"replace","path":"/spec/x","value":1}])
            ),
            Err("json patch: path /spec/x does not exist".into())
        );
        assert_eq!(
            jp(json!({}), json!([{"op":"remove","path":""}])),
            Err("json patch: cannot remove the whole document".into())
        );
    }

    #[test]
    fn rfc6902_move_and_copy() {
        // A.6, A.7
        assert_eq!(
            jp(
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])
            ),
            Ok(json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}))
        );
        assert_eq!(
            jp(
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}])
            ),
            Ok(json!({"foo":["all","cows","eat","grass"]}))
        );
        assert_eq!(
            jp(
                json!({"a":{"b":1}}),
                json!([{"op":"copy","from":"/a","path":"/c"}])
            ),
            Ok(json!({"a":{"b":1},"c":{"b":1}}))
        );
        assert_eq!(
            jp(
                json!({"a":{"b":1}}),
                json!([{"op":"move","from":"/a","path":"/a/b/c"}])
            ),
            Err("json patch: cannot move /a into its own child /a/b/c".into())
        );
        assert_eq!(
            jp(
                json!({"a":1}),
                json!([{"op":"copy","from":"/nope","path":"/c"}])
            ),
            Err("json patch: path /nope does not exist".into())
        );
        assert_eq!(
            jp(
                json!({"a":1}),
                json!([{"op":"move","from":"/a","path":"/a"}])
            ),
            Ok(json!({"a":1}))
        );
    }

    #[test]
    fn rfc6902_test() {
        // A.8, A.9, A.15
        assert_eq!(
            jp(
                json!({"baz":"qux","foo":["a",2,"c"]}),
                json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}])
            ),
            Ok(json!({"baz":"qux","foo":["a",2,"c"]}))
        );
        assert_eq!(
            jp(
                json!({"baz":"qux"}),
                json!([{"op":"test","path":"/baz","value":"bar"}])
            ),
            Err("json patch: test failed at /baz".into())
        );
        assert_eq!(
            jp(
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":"10"}])
            ),
            Err("json patch: test failed at /~01".into())
        );
        assert_eq!(
            jp(
                json!({"spec":{"replicas":3}}),
                json!([{"op":"test","path":"/spec/replicas","value":2}])
            ),
            Err("json patch: test failed at /spec/replicas".into())
        );
        // Numbers compare by value, objects regardless of order.
        assert!(jp(
            json!({"n":1,"o":{"a":1,"b":2}}),
            json!([
                {"op":"test","path":"/n","value":1.0},
                {"op":"test","path":"/o","value":{"b":2,"a":1}},
                {"op":"test","path":"","value":{"o":{"a":1,"b":2},"n":1}}
            ])
        )
        .is_ok());
        assert_eq!(
            jp(json!({}), json!([{"op":"test","path":"/x","value":null}])),
            Err("json patch: path /x does not exist".into())
        );
    }

    #[test]
    fn rfc6902_pointer_escapes() {
        // A.14
        assert_eq!(
            jp(
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10}, {"op":"add","path":"/a~1b","value":1}])
            ),
            Ok(json!({"/":9,"~1":10,"a/b":1}))
        );
        assert_eq!(
            jp(json!({}), json!([{"op":"add","path":"/a~2","value":1}])),
            Err("json patch: invalid path \"/a~2\": '~' must be followed by '0' or '1'".into())
        );
        assert_eq!(
            jp(json!({}), json!([{"op":"add","path":"a","value":1}])),
            Err("json patch: invalid path \"a\": must be empty or start with '/'".into())
        );
    }

    #[test]
    fn rfc6902_malformed_patches_and_atomicity() {
        assert_eq!(
            jp(json!({}), json!({"op":"add"})),
            Err("json patch: patch must be a JSON array of operations".into())
        );
        assert_eq!(
            jp(json!({}), json!([1])),
            Err("json patch: operation 0 is not an object".into())
        );
        assert_eq!(
            jp(json!({}), json!([{"path":"/a"}])),
            Err("json patch: operation 0 has no \"op\"".into())
        );
        assert_eq!(
            jp(json!({}), json!([{"op":"frobnicate","path":"/a"}])),
            Err("json patch: unknown operation \"frobnicate\"".into())
        );
        assert_eq!(
            jp(json!({}), json!([{"op":"move","path":"/a"}])),
            Err("json patch: operation 0 (move) is missing \"from\"".into())
        );
        // A failing later operation leaves the input untouched.
        let target = json!({"a": 1});
        assert!(json_patch(
            &target,
            &json!([{"op":"add","path":"/b","value":2},{"op":"test","path":"/a","value":5}])
        )
        .is_err());
        assert_eq!(target, json!({"a": 1}));
    }

    #[test]
    fn kubectl_patch_type_json() {
        let pod = json!({"metadata":{"labels":{"app.kubernetes.io/name":"web"}},"spec":{"containers":[{"name":"c","image":"a"}]}});
        let out = jp(
            pod,
            json!([
                {"op":"replace","path":"/spec/containers/0/image","value":"b"},
                {"op":"remove","path":"/metadata/labels/app.kubernetes.io~1name"}
            ]),
        );
        assert_eq!(
            out,
            Ok(json!({"metadata":{"labels":{}},"spec":{"containers":[{"name":"c","image":"b"}]}}))
        );
    }
}

//! Manifests: multi-document YAML and JSON parsing with positions, and
//! decoding into typed objects with every error reported by path.
//!
//! [`parse_documents`] turns a file into [`Document`]s (JSON values with the
//! line each starts on); [`decode_object`] turns one value into an
//! [`AnyObject`], reporting type errors, fields bramble does not support and
//! validation errors together, the way `kubectl` users expect:
//!
//! ```text
//! Pod "web" is invalid: [spec.containers[0].image: Required value, spec.affinity: field not supported by bramble]
//! ```
//!
//! YAML is read the way Kubernetes reads it: documents separated by `---`,
//! empty and comment-only documents skipped, anchors and merge keys (`<<`)
//! resolved, and `kind: List` documents expanded into their items. What JSON
//! cannot express (non-string mapping keys, `.nan`, tags such as `!Ref`) and
//! duplicate keys are errors with their position.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::kinds::AnyObject;
use crate::meta::{Status, StatusDetails};
use crate::validation::{self, FieldError};
use crate::Kind;

/// One object read from a manifest, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file name, or `-` for standard input.
    pub source: String,
    /// 0-based number of the document in the file, counting only documents
    /// that hold something (items of a `List` share the list's number).
    pub index: usize,
    /// 1-based line where the document's content starts (for an item of a
    /// YAML `List`, the line of its `-`, when it can be found).
    pub line: usize,
    /// The object, as JSON.
    pub value: Value,
}

impl Document {
    /// `FILE:LINE`, for messages about this document.
    pub fn position(&self) -> String {
        format!("{}:{}", self.source, self.line)
    }
}

/// A manifest that could not be read: malformed YAML or JSON, or a document
/// that is not an object. Displays as `FILE:LINE:COLUMN: message` (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ManifestError {
    /// The file name, or `-` for standard input.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a manifest object could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectError {
    /// The value is not a JSON object.
    #[error("an object must be a mapping (a JSON object), found {found}")]
    NotAnObject {
        /// The JSON type found (`an array`, `a string`, ...).
        found: String,
    },
    /// `apiVersion` or `kind` is missing.
    #[error("object has no `{missing}`: every object needs `apiVersion` and `kind` (e.g. `apiVersion: v1` and `kind: Pod`)")]
    MissingTypeInfo {
        /// `apiVersion`, `kind`, or `apiVersion` and `kind`.
        missing: String,
    },
    /// `apiVersion` and `kind` name no kind bramble serves.
    #[error("{}", unknown_kind_message(.api_version, .kind))]
    UnknownKind {
        /// The `apiVersion` as written.
        api_version: String,
        /// The `kind` as written.
        kind: String,
    },
    /// The object has wrongly typed fields, fields bramble does not support,
    /// or fails validation.
    #[error("{}", invalid_message(*.kind, .name, .errors))]
    Invalid {
        /// The object's kind.
        kind: Kind,
        /// The object's name (or `generateName`), possibly empty.
        name: String,
        /// Every problem found.
        errors: Vec<FieldError>,
    },
}

fn unknown_kind_message(api_version: &str, kind: &str) -> String {
    let mut message = format!(
        "no kind {kind:?} is registered for version {api_version:?}: bramble supports {}",
        Kind::supported_list()
    );
    if let Some(known) = Kind::all().iter().find(|k| k.name() == kind) {
        message.push_str(&format!(
            " (did you mean apiVersion {:?}?)",
            known.api_version()
        ));
    }
    message
}

/// Kubernetes' message for an invalid object: brackets around several errors.
fn invalid_message(kind: Kind, name: &str, errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    match list.as_slice() {
        [one] => format!("{kind} {name:?} is invalid: {one}"),
        _ => format!("{kind} {name:?} is invalid: [{}]", list.join(", ")),
    }
}

impl ObjectError {
    /// The Kubernetes `Status` for this error: 422 `Invalid` with one cause
    /// per field error, or 400 `BadRequest`.
    pub fn to_status(&self) -> Status {
        match self {
            ObjectError::Invalid { kind, name, errors } => {
                Status::failure(422, "Invalid", self.to_string()).with_details(StatusDetails {
                    name: Some(name.clone()),
                    group: Some(kind.info().group.to_string()),
                    kind: Some(kind.name().to_string()),
                    causes: errors.iter().map(FieldError::to_cause).collect(),
                })
            }
            _ => Status::failure(400, "BadRequest", self.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------
// JSON values from YAML or JSON, strictly
// ---------------------------------------------------------------------------

/// A JSON value deserialized strictly: string keys only, no duplicate keys,
/// no tags, finite numbers; with `YAML`, merge keys (`<<`) are applied.
struct Strict<const YAML: bool>(Value);

impl<'de, const YAML: bool> Deserialize<'de> for Strict<YAML> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ValueVisitor::<YAML>)
            .map(Strict)
    }
}

struct ValueVisitor<const YAML: bool>;

impl<'de, const YAML: bool> Visitor<'de> for ValueVisitor<YAML> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value that JSON can represent")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v).map(Value::from).map_err(|_| {
            E::custom(format!(
                "the integer {v} is too large: quote it to keep it as a string"
            ))
        })
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v).map(Value::from).map_err(|_| {
            E::custom(format!(
                "the integer {v} is too large: quote it to keep it as a string"
            ))
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can represent")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom(
            "binary values are not supported: use a base64 string",
        ))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element::<Strict<YAML>>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let mut merged = Vec::new();
        while let Some(key) = access.next_key_seed(KeySeed { seen: &map })? {
            let Strict(value) = access.next_value::<Strict<YAML>>()?;
            if YAML && key == "<<" {
                merged.push(value);
            } else {
                map.insert(key, value);
            }
        }
        for value in merged {
            let sources = match value {
                Value::Object(source) => vec![source],
                Value::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::Object(source) => Ok(source),
                        _ => Err(de::Error::custom(
                            "a merge key `<<` takes a mapping or a sequence of mappings",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(de::Error::custom(
                        "a merge key `<<` takes a mapping or a sequence of mappings",
                    ))
                }
            };
            for source in sources {
                for (k, v) in source {
                    map.entry(k).or_insert(v);
                }
            }
        }
        Ok(Value::Object(map))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "YAML tags (such as `!Ref`) are not supported: write plain values",
        ))
    }
}

/// Reads a mapping key: a string not already in `seen`.
struct KeySeed<'a> {
    seen: &'a Map<String, Value>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn non_string_key<E: de::Error>(what: fmt::Arguments<'_>) -> E {
    E::custom(format!(
        "mapping keys must be strings, found {what}: quote the key"
    ))
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.seen.contains_key(v) {
            Err(E::custom(format!("duplicate key {v:?}")))
        } else {
            Ok(v.to_string())
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Err(non_string_key(format_args!("the boolean {v}")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Err(non_string_key(format_args!("the number {v}")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Err(non_string_key(format_args!("the number {v}")))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Err(non_string_key(format_args!("the number {v}")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Err(non_string_key(format_args!("the number {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Err(non_string_key(format_args!("the number {v}")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(non_string_key(format_args!("null")))
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Err(non_string_key(format_args!("null")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(non_string_key(format_args!("a sequence")))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(non_string_key(format_args!("a mapping")))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(non_string_key(format_args!("a tagged value")))
    }
}

// ---------------------------------------------------------------------------
// Splitting and parsing
// ---------------------------------------------------------------------------

/// True for a YAML document marker line (`---` or `...` at column 0).
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn is_blank_or_comment(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.is_empty() || trimmed.starts_with('#')
}

/// A run of whole lines holding one YAML document.
struct Segment<'a> {
    /// 0-based line number of the segment's first line.
    first_line: usize,
    text: &'a str,
}

/// Split YAML text at its document markers, keeping whole lines so that
/// positions within a segment only need the segment's first line added.
fn split_yaml(text: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    let mut start = 0;
    let mut first_line = 0;
    let mut content = false;
    let mut directives = false;
    let mut offset = 0;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if is_marker(line, "---") && (content || !directives) {
            segments.push(Segment {
                first_line,
                text: &text[start..offset],
            });
            start = offset;
            first_line = line_no;
            content = false;
            directives = false;
        }
        offset += line.len();
        if is_marker(line, "...") {
            segments.push(Segment {
                first_line,
                text: &text[start..offset],
            });
            start = offset;
            first_line = line_no + 1;
            content = false;
            directives = false;
        } else if line.starts_with('%') {
            directives = true;
        } else if !is_blank_or_comment(line) && !is_marker(line, "---") {
            content = true;
        }
    }
    segments.push(Segment {
        first_line,
        text: &text[start..],
    });
    segments
}

/// 1-based line of a segment's first content line.
fn content_line(segment: &Segment<'_>) -> usize {
    for (i, line) in segment.text.lines().enumerate() {
        let bare_marker = is_marker(line, "---") && {
            let rest = line[3..].trim();
            rest.is_empty() || rest.starts_with('#')
        };
        if !is_blank_or_comment(line) && !line.starts_with('%') && !bare_marker {
            return segment.first_line + i + 1;
        }
    }
    segment.first_line + 1
}

/// Rewrite libyaml's `problem at line L column C, context at line L column C`
/// into `problem (context at line L column C)` with absolute line numbers.
fn yaml_message(message: &str, line_offset: usize) -> String {
    // Find every " at line N column M" and " at position N".
    let mut out = String::new();
    let mut rest = message;
    let mut first = true;
    while let Some(pos) = rest
        .find(" at line ")
        .or_else(|| rest.find(" at position "))
    {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        let end = after.find(',').unwrap_or(after.len());
        let mark = &after[..end];
        if !first {
            // A context mark: keep it, with the absolute line number.
            let adjusted = mark
                .strip_prefix(" at line ")
                .and_then(|m| m.split_once(" column "))
                .and_then(|(l, c)| l.parse::<usize>().ok().map(|l| (l + line_offset, c)));
            match adjusted {
                Some((l, c)) => out.push_str(&format!(" at line {l} column {c}")),
                None => out.push_str(mark),
            }
        }
        first = false;
        rest = &after[end..];
    }
    out.push_str(rest);
    match out.split_once(", ") {
        Some((problem, context)) if context.starts_with("while ") => {
            format!("{problem} ({context})")
        }
        _ => out,
    }
}

fn yaml_error(source: &str, segment: &Segment<'_>, err: &serde_yaml::Error) -> ManifestError {
    let (line, column) = match err.location() {
        Some(location) => (segment.first_line + location.line(), location.column()),
        None => (content_line(segment), 1),
    };
    ManifestError {
        file: source.to_string(),
        line,
        column: column.max(1),
        message: yaml_message(&err.to_string(), segment.first_line),
    }
}

fn json_error(source: &str, err: &serde_json::Error) -> ManifestError {
    let full = err.to_string();
    let message = match full.rfind(" at line ") {
        Some(pos) => full[..pos].to_string(),
        None => full,
    };
    ManifestError {
        file: source.to_string(),
        line: err.line().max(1),
        column: err.column().max(1),
        message,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// Read a manifest: JSON (text starting with `{` or `[`: one or more objects,
/// or an array of objects) or multi-document YAML. `source` names the file
/// (`-` for standard input) in positions and errors.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        parse_json(source, text)
    } else {
        parse_yaml(source, text)
    }
}

fn parse_json(source: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Strict<false>>();
    let mut offset = 0;
    loop {
        let start = offset
            + text[offset..]
                .find(|c: char| !c.is_whitespace())
                .unwrap_or(text.len() - offset);
        let line = text[..start].matches('\n').count() + 1;
        let Some(next) = stream.next() else {
            break;
        };
        let Strict(value) = next.map_err(|err| json_error(source, &err))?;
        offset = stream.byte_offset();
        let values = match value {
            Value::Array(items) if documents.is_empty() && offset == text.trim_end().len() => items,
            other => vec![other],
        };
        for value in values {
            let index = documents.len();
            push_document(&mut documents, source, index, line, value, None)?;
        }
    }
    Ok(documents)
}

fn parse_yaml(source: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    let mut index = 0;
    for segment in split_yaml(text) {
        if segment.text.lines().all(|l| {
            is_blank_or_comment(l)
                || is_marker(l, "---")
                || is_marker(l, "...")
                || l.starts_with('%')
        }) {
            continue;
        }
        let line = content_line(&segment);
        for document in serde_yaml::Deserializer::from_str(segment.text) {
            let Strict(value) = Strict::<true>::deserialize(document)
                .map_err(|err| yaml_error(source, &segment, &err))?;
            if value.is_null() {
                continue;
            }
            push_document(&mut documents, source, index, line, value, Some(&segment))?;
            index += 1;
        }
    }
    Ok(documents)
}

/// Add `value` as a document, expanding a `List` into its items.
fn push_document(
    documents: &mut Vec<Document>,
    source: &str,
    index: usize,
    line: usize,
    value: Value,
    segment: Option<&Segment<'_>>,
) -> Result<(), ManifestError> {
    let not_a_mapping = |value: &Value, what: &str, line: usize| ManifestError {
        file: source.to_string(),
        line,
        column: 1,
        message: format!(
            "{what} is {}, not a mapping: each object needs `apiVersion`, `kind` and `metadata`",
            type_name(value)
        ),
    };
    let Value::Object(map) = &value else {
        return Err(not_a_mapping(&value, "the document", line));
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    let items = map.get("items");
    let is_list = kind == "List" || (kind.ends_with("List") && items.is_some_and(Value::is_array));
    if !is_list {
        documents.push(Document {
            source: source.to_string(),
            index,
            line,
            value,
        });
        return Ok(());
    }
    let items = match items {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(ManifestError {
                file: source.to_string(),
                line,
                column: 1,
                message: format!(
                    "`items` of a {kind} must be a sequence, found {}",
                    type_name(other)
                ),
            })
        }
    };
    let lines = segment
        .and_then(|s| list_item_lines(s, items.len()))
        .unwrap_or_else(|| vec![line; items.len()]);
    for (i, (item, item_line)) in items.into_iter().zip(lines).enumerate() {
        if !item.is_object() {
            return Err(not_a_mapping(
                &item,
                &format!("item {i} of the {kind}"),
                item_line,
            ));
        }
        documents.push(Document {
            source: source.to_string(),
            index,
            line: item_line,
            value: item,
        });
    }
    Ok(())
}

/// The 1-based lines of the `- ` entries of a top-level `items:` block, when
/// there are exactly `count` of them.
fn list_item_lines(segment: &Segment<'_>, count: usize) -> Option<Vec<usize>> {
    let lines: Vec<&str> = segment.text.lines().collect();
    let items_at = lines.iter().position(|l| {
        l.strip_prefix("items:")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim().starts_with('#'))
    })?;
    let mut indent = None;
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(items_at + 1) {
        let line = line.trim_end();
        if is_blank_or_comment(line) {
            continue;
        }
        let spaces = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[spaces..];
        let is_entry = rest == "-" || rest.starts_with("- ");
        let indent = *indent.get_or_insert(spaces);
        if spaces < indent || (spaces == indent && !is_entry) {
            break;
        }
        if spaces == indent {
            found.push(segment.first_line + i + 1);
        }
    }
    (found.len() == count).then_some(found)
}

// ---------------------------------------------------------------------------
// Decoding objects
// ---------------------------------------------------------------------------

/// Fields whose values are maps with free-form keys: their entries are shown
/// as `field[key]`.
const MAP_FIELDS: [&str; 11] = [
    "labels",
    "annotations",
    "data",
    "binaryData",
    "stringData",
    "nodeSelector",
    "matchLabels",
    "requests",
    "limits",
    "capacity",
    "allocatable",
];

/// A step into a JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn format_path(steps: &[Step], kind: Kind) -> String {
    let mut out = String::new();
    let mut parent: Option<&str> = None;
    for (depth, step) in steps.iter().enumerate() {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(key) => {
                let is_map_entry = parent.is_some_and(|p| {
                    MAP_FIELDS.contains(&p)
                        || (kind == Kind::Service && p == "selector" && depth == 2)
                });
                if is_map_entry {
                    out.push_str(&format!("[{key}]"));
                } else {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
            }
        }
        parent = match step {
            Step::Key(key) => Some(key),
            Step::Index(_) => None,
        };
    }
    out
}

fn get_mut<'a>(value: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    let mut current = value;
    for step in steps {
        current = match (step, current) {
            (Step::Key(key), Value::Object(map)) => map.get_mut(key)?,
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

fn get<'a>(value: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    let mut current = value;
    for step in steps {
        current = match (step, current) {
            (Step::Key(key), Value::Object(map)) => map.get(key)?,
            (Step::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Remove object entries whose value is `null`, as Kubernetes treats them as absent.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn json_type(value: Option<&Value>) -> &'static str {
    match value {
        None | Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "integer",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// What serde expected, in JSON words.
fn expected_words(expected: &str) -> String {
    let range = |min: i128, max: i128| format!("an integer between {min} and {max}");
    match expected {
        "i64" | "isize" => "an integer".to_string(),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "u64" | "usize" => "a non-negative integer".to_string(),
        "u32" => range(0, u32::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u8" => range(0, u8::MAX.into()),
        "f64" | "f32" => "a number".to_string(),
        "a boolean" => "a boolean (true or false)".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "an object".to_string(),
        other if other.starts_with("struct ") => "an object".to_string(),
        other => other.to_string(),
    }
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

/// The value of a YAML 1.1 octal integer (`0644`) given where an integer
/// was expected.
fn yaml11_octal(message: &str, value: Option<&Value>) -> Option<i64> {
    let text = value?.as_str()?;
    let expects_integer = message.starts_with("invalid type: string")
        && ["i64", "i32", "i16", "u64", "u32", "u16"]
            .iter()
            .any(|t| message.ends_with(&format!("expected {t}")));
    let digits = text.strip_prefix('0')?;
    if !expects_integer || digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    i64::from_str_radix(digits, 8).ok()
}

/// Turn serde's message about the value at `steps` into a field error.
fn type_error(kind: Kind, steps: &[Step], message: &str, input: &Value) -> FieldError {
    let found = json_type(get(input, steps));
    let path = format_path(steps, kind);
    if let Some(field) = missing_field(message) {
        let mut field_steps = steps.to_vec();
        field_steps.push(Step::Key(field.to_string()));
        return FieldError::required(format_path(&field_steps, kind));
    }
    if message.contains("did not match any variant of untagged enum IntOrString") {
        return FieldError::type_error(path, format!("{found:?}: expected an integer or a string"));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        // "invalid value: integer `3000000000`, expected i32"
        if let Some((what, expected)) = rest.split_once(", expected ") {
            let shown = what
                .split_once('`')
                .and_then(|(_, v)| v.strip_suffix('`'))
                .unwrap_or(what);
            return FieldError::type_error(
                path,
                format!("{shown}: expected {}", expected_words(expected)),
            );
        }
    }
    if let Some((_, expected)) = message.split_once(", expected ") {
        return FieldError::type_error(
            path,
            format!("{found:?}: expected {}", expected_words(expected)),
        );
    }
    FieldError::type_error(path, format!("{found:?}: {message}"))
}

/// Placeholders tried, in order, for an array element of the wrong type.
fn placeholders() -> [Value; 5] {
    [
        Value::Object(Map::new()),
        Value::String(String::new()),
        Value::from(0),
        Value::Bool(false),
        Value::Array(Vec::new()),
    ]
}

/// Decode `input` as `kind`, collecting every type error: each offending
/// value is removed (or, in an array, replaced by a placeholder) and decoding
/// is tried again. Returns the object (if it could be decoded at all), the
/// type errors, their paths, and the input as finally decoded.
fn decode_collecting(
    kind: Kind,
    mut input: Value,
) -> (Option<AnyObject>, Vec<FieldError>, Vec<Vec<Step>>, Value) {
    let mut errors = Vec::new();
    let mut error_paths: Vec<Vec<Step>> = Vec::new();
    let mut placeholder_tries: Vec<(Vec<Step>, usize)> = Vec::new();
    for _ in 0..256 {
        let err = match AnyObject::from_value(kind, input.clone()) {
            Ok(obj) => return (Some(obj), errors, error_paths, input),
            Err(err) => err,
        };
        let mut steps = Vec::new();
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => steps.push(Step::Index(*index)),
                serde_path_to_error::Segment::Map { key } => steps.push(Step::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    steps.push(Step::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        let message = err.inner().to_string();
        if let Some(octal) = yaml11_octal(&message, get(&input, &steps)) {
            // `mode: 0644` is an octal integer in YAML 1.1, which Kubernetes
            // reads; YAML 1.2 makes it a string.
            if let Some(slot) = get_mut(&mut input, &steps) {
                *slot = Value::from(octal);
                continue;
            }
        }
        // The field the error is about (for a missing field, the field itself).
        let mut reported = steps.clone();
        if let Some(field) = missing_field(&message) {
            reported.push(Step::Key(field.to_string()));
        }
        // An error caused by one of our placeholders, or by removing a value
        // already reported, is not reported again.
        let retry = placeholder_tries.iter_mut().find(|(p, _)| *p == steps);
        let tries = match retry {
            Some((_, tries)) => {
                *tries += 1;
                *tries
            }
            None => {
                if !error_paths.contains(&reported) {
                    errors.push(type_error(kind, &steps, &message, &input));
                    error_paths.push(reported);
                }
                0
            }
        };
        let Some(last) = steps.last().cloned() else {
            return (None, errors, error_paths, input);
        };
        let parent = &steps[..steps.len() - 1];
        let fixed = match (last, get_mut(&mut input, parent)) {
            (Step::Key(key), Some(Value::Object(map))) => map.remove(&key).is_some(),
            (Step::Index(i), Some(Value::Array(items))) => {
                match (items.get_mut(i), placeholders().into_iter().nth(tries)) {
                    (Some(item), Some(placeholder)) => {
                        *item = placeholder;
                        if tries == 0 {
                            placeholder_tries.push((steps.clone(), 0));
                        }
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !fixed {
            return (None, errors, error_paths, input);
        }
    }
    (None, errors, error_paths, input)
}

/// The paths (like `spec.containers[0].lifecycle`) of every key in `input`
/// that is absent from `decoded`, the same object after a round trip through
/// its typed form: the fields bramble does not support. Objects and arrays
/// are compared recursively; input values that are `null`, `{}` or `[]` do
/// not count, and only the presence of keys is compared, not values.
pub fn unsupported_fields(input: &Value, decoded: &Value) -> Vec<String> {
    fn walk(input: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
        match (input, decoded) {
            (Value::Object(a), Value::Object(b)) => {
                for (key, value) in a {
                    if is_empty(value) {
                        continue;
                    }
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match b.get(key) {
                        None => out.push(child),
                        Some(decoded) => walk(value, decoded, &child, out),
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(x, y, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    fn is_empty(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Object(map) => map.is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => false,
        }
    }
    let mut out = Vec::new();
    walk(input, decoded, "", &mut out);
    out
}

/// True when `path` is `prefix` or lies under it.
fn path_within(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Decode one manifest object: check `apiVersion` and `kind`, decode it into
/// its typed form, and report every wrongly typed field, every field bramble
/// does not support and every validation error together.
///
/// Unknown fields under `status` are ignored (status is written by bramble,
/// never taken from a manifest), and `null` values count as absent.
pub fn decode_object(value: Value) -> Result<AnyObject, ObjectError> {
    let Value::Object(map) = &value else {
        return Err(ObjectError::NotAnObject {
            found: type_name(&value).to_string(),
        });
    };
    let text = |key: &str| match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let (api_version, kind_name) = match (text("apiVersion"), text("kind")) {
        (Some(api_version), Some(kind)) => (api_version, kind),
        (None, Some(_)) => {
            return Err(ObjectError::MissingTypeInfo {
                missing: "apiVersion".into(),
            })
        }
        (Some(_), None) => {
            return Err(ObjectError::MissingTypeInfo {
                missing: "kind".into(),
            })
        }
        (None, None) => {
            return Err(ObjectError::MissingTypeInfo {
                missing: "apiVersion` and `kind".into(),
            })
        }
    };
    let Some(kind) = Kind::from_api_version_kind(&api_version, &kind_name) else {
        return Err(ObjectError::UnknownKind {
            api_version,
            kind: kind_name,
        });
    };
    let meta = map.get("metadata");
    let name = ["name", "generateName"]
        .iter()
        .find_map(|k| meta.and_then(|m| m.get(k)).and_then(Value::as_str))
        .unwrap_or("")
        .to_string();

    let mut input = value;
    strip_nulls(&mut input);
    let (decoded, mut errors, error_paths, decoded_input) = decode_collecting(kind, input);
    if let Some(obj) = decoded {
        let round_trip = obj.to_value();
        for path in unsupported_fields(&decoded_input, &round_trip) {
            if !path_within(&path, "status") {
                errors.push(FieldError::unsupported(path));
            }
        }
        let type_error_paths: Vec<String> = error_paths
            .iter()
            .map(|steps| format_path(steps, kind))
            .collect();
        // Errors at or under a wrongly typed field, or on one of its parents,
        // come from the value removed for it and would only repeat it.
        errors.extend(validation::validate(&obj).into_iter().filter(|e| {
            !type_error_paths
                .iter()
                .any(|p| path_within(&e.path, p) || path_within(p, &e.path))
        }));
        if errors.is_empty() {
            return Ok(obj);
        }
    }
    Err(ObjectError::Invalid { kind, name, errors })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(text: &str) -> Vec<Document> {
        match parse_documents("app.yaml", text) {
            Ok(documents) => documents,
            Err(err) => panic!("should parse: {err}"),
        }
    }

    fn parse_err(text: &str) -> ManifestError {
        match parse_documents("app.yaml", text) {
            Ok(documents) => panic!("should not parse, got {documents:?}"),
            Err(err) => err,
        }
    }

    fn decode(value: Value) -> AnyObject {
        match decode_object(value) {
            Ok(obj) => obj,
            Err(err) => panic!("should decode: {err}"),
        }
    }

    fn invalid(value: Value) -> Vec<String> {
        match decode_object(value) {
            Err(ObjectError::Invalid { errors, .. }) => {
                errors.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn multi_document_yaml_with_positions() {
        let text = "\
# a leading comment, not a document
---
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
---
# comment-only document
---

---
apiVersion: v1
kind: ConfigMap
metadata:
  name: conf
  namespace: team-a
data:
  separator: |
    --- inside a block scalar, indented
...
---   # a marker with a comment
apiVersion: v1
kind: Secret
metadata: {name: s}
";
        let documents = parse(text);
        let summary: Vec<(usize, usize, &str)> = documents
            .iter()
            .map(|d| (d.index, d.line, d.value["kind"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            summary,
            [(0, 3, "Namespace"), (1, 12, "ConfigMap"), (2, 22, "Secret")]
        );
        assert_eq!(
            documents[1].value["data"]["separator"],
            "--- inside a block scalar, indented\n"
        );
        assert_eq!(documents[0].source, "app.yaml");
        assert_eq!(documents[2].position(), "app.yaml:22");
        assert!(parse("").is_empty());
        assert!(parse("# nothing\n---\n---\n").is_empty());
    }

    #[test]
    fn yaml_directives_stay_with_their_document() {
        let documents =
            parse("%YAML 1.2\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n");
        assert_eq!(documents.len(), 1);
        assert_eq!(documents[0].line, 3);
    }

    #[test]
    fn malformed_yaml_reports_file_line_and_column() {
        let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx
   ports: []
";
        let err = parse_err(text);
        assert_eq!((err.line, err.column), (9, 4));
        assert_eq!(err.to_string(), "app.yaml:9:4: did not find expected key (while parsing a block mapping at line 6 column 3)");

        // Positions count from the start of the file, not of the document.
        let err = parse_err(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\na: 1\nb:\n  c: 2\n d: 3\n",
        );
        assert_eq!(err.to_string(), "app.yaml:8:2: did not find expected key (while parsing a block mapping at line 5 column 1)");
        let err = parse_err("a: 1\nb: [1, 2\n");
        assert_eq!((err.line, err.column), (3, 1));
        assert!(
            err.message.starts_with("did not find expected ',' or ']'"),
            "{err}"
        );
        let err = parse_err("\tkey: 1\n");
        assert_eq!(err.to_string(), "app.yaml:1:1: found character that cannot start any token (while scanning for the next token)");
    }

    #[test]
    fn yaml_that_json_cannot_hold_is_an_error() {
        let err = parse_err("metadata:\n  name: a\n  name: b\n");
        assert_eq!(
            err.to_string(),
            "app.yaml:3:3: metadata: duplicate key \"name\""
        );
        let err = parse_err("data:\n  1: one\n");
        assert_eq!(
            err.to_string(),
            "app.yaml:2:3: data: mapping keys must be strings, found the number 1: quote the key"
        );
        let err = parse_err("data:\n  ? [a, b]\n  : c\n");
        assert!(
            err.message
                .contains("mapping keys must be strings, found a sequence"),
            "{err}"
        );
        let err = parse_err("spec:\n  replicas: !Ref Count\n");
        assert_eq!(err.to_string(), "app.yaml:2:13: spec.replicas: YAML tags (such as `!Ref`) are not supported: write plain values");
        let err = parse_err("value: .inf\n");
        assert_eq!((err.line, err.column), (1, 8));
        assert!(
            err.message.contains("is not a number JSON can represent"),
            "{err}"
        );
        let err = parse_err("big: 123456789012345678901234567890\n");
        assert!(err.message.contains("is too large"), "{err}");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let documents = parse(
            "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
  labels: &common
    app: web
    tier: front
  annotations:
    <<: *common
    tier: overridden
",
        );
        assert_eq!(
            documents[0].value["metadata"]["annotations"],
            json!({"app": "web", "tier": "overridden"})
        );
    }

    #[test]
    fn documents_must_be_mappings() {
        let err =
            parse_err("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- a\n- b\n");
        assert_eq!(err.to_string(), "app.yaml:5:1: the document is a sequence, not a mapping: each object needs `apiVersion`, `kind` and `metadata`");
        let err = parse_err("just a string\n");
        assert_eq!((err.line, err.column), (1, 1));
        assert!(err.message.contains("is a string, not a mapping"));
    }

    #[test]
    fn json_documents() {
        let text = r#"
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
{"apiVersion": "v1",
 "kind": "Namespace", "metadata": {"name": "b"}}
"#;
        let documents = parse(text);
        let lines: Vec<(usize, usize)> = documents.iter().map(|d| (d.index, d.line)).collect();
        assert_eq!(lines, [(0, 2), (1, 3)]);

        let documents = parse(r#"[{"kind": "A"}, {"kind": "B"}]"#);
        assert_eq!(documents.len(), 2, "a top-level array holds documents");
        assert_eq!(documents[1].value["kind"], "B");

        let err = parse_err("{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\",\n}");
        assert_eq!(err.to_string(), "app.yaml:4:1: trailing comma");
        let err = parse_err(r#"{"a": 1, "a": 2}"#);
        assert_eq!(err.message, "duplicate key \"a\"");
        let err = parse_err(r#"[1]"#);
        assert!(err.message.contains("is a number, not a mapping"), "{err}");
    }

    #[test]
    fn lists_expand_into_their_items() {
        let text = "\
apiVersion: v1
kind: List
metadata: {}
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: a
# between items
- apiVersion: v1
  kind: Namespace
  metadata:
    name: b
---
apiVersion: v1
kind: PodList
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: p}
";
        let documents = parse(text);
        let summary: Vec<(usize, usize, &str)> = documents
            .iter()
            .map(|d| {
                (
                    d.index,
                    d.line,
                    d.value["metadata"]["name"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(summary, [(0, 5, "a"), (0, 10, "b"), (1, 18, "p")]);
        assert!(parse("apiVersion: v1\nkind: List\nitems: []\n").is_empty());
        let json = parse(
            r#"{"apiVersion": "v1", "kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]}"#,
        );
        assert_eq!(json.len(), 2);
        let err = parse_err("kind: List\nitems:\n- 1\n");
        assert_eq!(err.to_string(), "app.yaml:3:1: item 0 of the List is a number, not a mapping: each object needs `apiVersion`, `kind` and `metadata`");
        let err = parse_err("kind: List\nitems: nope\n");
        assert_eq!(
            err.message,
            "`items` of a List must be a sequence, found a string"
        );
        // A kind that merely ends in "List" without items is an object.
        assert_eq!(parse("kind: AllowList\nspec: {}\n").len(), 1);
    }

    #[test]
    fn unknown_and_missing_kinds() {
        let err = decode_object(json!({"apiVersion": "v1", "kind": "Widget"})).err();
        assert_eq!(
            err,
            Some(ObjectError::UnknownKind {
                api_version: "v1".into(),
                kind: "Widget".into()
            })
        );
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            format!(
                "no kind \"Widget\" is registered for version \"v1\": bramble supports {}",
                Kind::supported_list()
            )
        );
        assert!(Kind::supported_list().starts_with("v1/Namespace, v1/Node"));
        let err = decode_object(json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment"}))
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(
            err.ends_with("(did you mean apiVersion \"apps/v1\"?)"),
            "{err}"
        );
        let missing = |value: Value| {
            decode_object(value)
                .map_err(|e| e.to_string())
                .err()
                .unwrap_or_default()
        };
        assert_eq!(missing(json!({"kind": "Pod"})), "object has no `apiVersion`: every object needs `apiVersion` and `kind` (e.g. `apiVersion: v1` and `kind: Pod`)");
        assert!(missing(json!({"apiVersion": "v1"})).starts_with("object has no `kind`"));
        assert!(
            missing(json!({"metadata": {}})).starts_with("object has no `apiVersion` and `kind`")
        );
        assert_eq!(
            missing(json!([1])),
            "an object must be a mapping (a JSON object), found a sequence"
        );
        assert_eq!(
            decode_object(json!({"apiVersion": "v1", "kind": "Widget"}))
                .map_err(|e| e.to_status().code)
                .err(),
            Some(400)
        );
    }

    #[test]
    fn unsupported_field_paths() {
        let input = json!({
            "metadata": {"name": "web", "selfLink": "/x", "managedFields": [], "creationTimestamp": null},
            "spec": {
                "affinity": {"nodeAffinity": {}},
                "securityContext": {},
                "containers": [
                    {"name": "a", "image": "x", "lifecycle": {"preStop": {}}, "ports": [{"containerPort": 80, "appProtocol": "http"}]},
                    {"name": "b", "image": "y", "stdin": false}
                ]
            }
        });
        let pod = decode(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}]}, {"name": "b", "image": "y"}]}}),
        );
        assert_eq!(
            unsupported_fields(&input, &pod.to_value()),
            [
                "metadata.selfLink",
                "spec.affinity",
                "spec.containers[0].lifecycle",
                "spec.containers[0].ports[0].appProtocol",
                "spec.containers[1].stdin",
            ]
        );
    }

    #[test]
    fn type_errors_are_reported_by_path() {
        let errors = invalid(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"version": 2}},
            "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": "eighty"}], "command": ["run", 5]}]}
        }));
        assert_eq!(errors, [
            "metadata.labels[version]: Invalid value: \"integer\": expected a string",
            "spec.containers[0].command[1]: Invalid value: \"integer\": expected a string",
            "spec.containers[0].ports[0].containerPort: Invalid value: \"string\": expected an integer",
        ]);
        let errors = invalid(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3000000000_i64, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "nginx", "livenessProbe": {"httpGet": {"path": "/"}}, "readinessProbe": {"tcpSocket": {"port": true}}, "env": "FOO=bar"}
            ]}}}
        }));
        assert_eq!(errors, [
            "spec.replicas: Invalid value: 3000000000: expected an integer between -2147483648 and 2147483647",
            "spec.template.spec.containers[0].env: Invalid value: \"string\": expected an array",
            "spec.template.spec.containers[0].livenessProbe.httpGet.port: Required value",
            "spec.template.spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: \"boolean\": expected an integer or a string",
        ]);
        let errors = invalid(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"app": ["web"]}, "ports": {"port": 80}}}),
        );
        assert_eq!(
            errors,
            [
                "spec.ports: Invalid value: \"object\": expected an array",
                "spec.selector[app]: Invalid value: \"array\": expected a string",
            ]
        );
    }

    #[test]
    fn nulls_count_as_absent() {
        let pod = decode(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": null},
            "spec": {"containers": [{"name": "web", "image": "nginx", "resources": {}, "env": null}], "volumes": null},
            "status": {}
        }));
        assert_eq!(pod.metadata().name.as_deref(), Some("web"));
    }

    #[test]
    fn status_fields_are_not_reported() {
        let pod = decode(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            "status": {"phase": "Running", "qosClass": "BestEffort", "containerStatuses": [{"name": "web", "lastState": {}, "volumeMounts": [{"name": "x"}]}]}
        }));
        assert_eq!(pod.kind(), Kind::Pod);
    }

    #[test]
    fn invalid_message_and_status() {
        let err = decode_object(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web"}], "affinity": {"podAntiAffinity": {"x": 1}}}
        }));
        let err = match err {
            Err(err) => err,
            Ok(obj) => panic!("should be invalid: {obj:?}"),
        };
        assert_eq!(err.to_string(), "Pod \"web\" is invalid: [spec.affinity: field not supported by bramble, spec.containers[0].image: Required value]");
        let status = err.to_status();
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        let details = status.details.unwrap_or_default();
        assert_eq!(details.kind.as_deref(), Some("Pod"));
        assert_eq!(details.name.as_deref(), Some("web"));
        assert_eq!(details.causes.len(), 2);
        assert_eq!(details.causes[0].reason, "FieldValueUnknown");
        assert_eq!(details.causes[0].field, "spec.affinity");
        assert_eq!(details.causes[1].message, "Required value");

        let one = decode_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Bad"}}),
        )
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
        assert!(
            one.starts_with("Namespace \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\""),
            "{one}"
        );
    }

    /// A Deployment as written for Kubernetes, using only fields bramble supports.
    const REAL_WORLD_DEPLOYMENT: &str = r#"
# Source: sensor-gateway/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sensor-gateway
  namespace: iot
  labels:
    app.kubernetes.io/name: sensor-gateway
    app.kubernetes.io/instance: prod
    app.kubernetes.io/version: "1.4.2"
    app.kubernetes.io/managed-by: Helm
  annotations:
    deployment.kubernetes.io/revision: "3"
spec:
  replicas: 3
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: sensor-gateway
      app.kubernetes.io/instance: prod
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 25%
  template:
    metadata:
      labels:
        app.kubernetes.io/name: sensor-gateway
        app.kubernetes.io/instance: prod
      annotations:
        checksum/config: 6f1ed002ab5595859014ebf0951522d9
    spec:
      terminationGracePeriodSeconds: 45
      nodeSelector:
        kubernetes.io/arch: arm64
      tolerations:
        - key: node-role.kubernetes.io/edge
          operator: Exists
          effect: NoSchedule
      initContainers:
        - name: wait-for-broker
          image: busybox:1.36
          command: ["sh", "-c", "until nc -z mqtt 1883; do sleep 1; done"]
      containers:
        - name: gateway
          image: "registry.example.com/sensor-gateway:1.4.2"
          imagePullPolicy: IfNotPresent
          args:
            - --listen=:8080
            - --broker=mqtt://mqtt:1883
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
            - name: metrics
              containerPort: 9100
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: POD_IP
              valueFrom:
                fieldRef:
                  apiVersion: v1
                  fieldPath: status.podIP
            - name: LOG_LEVEL
              valueFrom:
                configMapKeyRef:
                  name: sensor-gateway
                  key: log-level
            - name: API_TOKEN
              valueFrom:
                secretKeyRef:
                  name: sensor-gateway
                  key: token
                  optional: false
          resources:
            requests:
              cpu: 100m
              memory: 64Mi
            limits:
              cpu: 0.5
              memory: 128Mi
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: 10
            periodSeconds: 20
          readinessProbe:
            tcpSocket:
              port: 8080
            periodSeconds: 5
            failureThreshold: 3
          securityContext:
            runAsUser: 10001
            runAsGroup: 10001
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: config
              mountPath: /etc/gateway
              readOnly: true
            - name: cache
              mountPath: /var/cache/gateway
            - name: devices
              mountPath: /dev/ttyUSB0
      volumes:
        - name: config
          configMap:
            name: sensor-gateway
            defaultMode: 0444
        - name: cache
          emptyDir:
            sizeLimit: 256Mi
        - name: devices
          hostPath:
            path: /dev/ttyUSB0
            type: CharDevice
"#;

    #[test]
    fn a_real_world_deployment_decodes_cleanly() {
        let documents = parse(REAL_WORLD_DEPLOYMENT);
        assert_eq!(documents.len(), 1);
        assert_eq!(documents[0].line, 3);
        let obj = decode(documents[0].value.clone());
        let AnyObject::Deployment(deployment) = obj else {
            panic!("expected a Deployment");
        };
        assert_eq!(deployment.spec.replicas, Some(3));
        let container = &deployment.spec.template.spec.containers[0];
        assert_eq!(
            container
                .resources
                .as_ref()
                .map(|r| r.limits["cpu"].0.as_str()),
            Some("0.5")
        );
        assert_eq!(
            deployment.spec.template.spec.volumes[0]
                .config_map
                .as_ref()
                .and_then(|c| c.default_mode),
            Some(0o444)
        );
    }

    #[test]
    fn affinity_and_a_bad_port_are_both_reported() {
        let text = REAL_WORLD_DEPLOYMENT
            .replace(
                "      terminationGracePeriodSeconds: 45\n",
                "      terminationGracePeriodSeconds: 45\n      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms: []\n",
            )
            .replace("containerPort: 9100", "containerPort: 91000");
        let documents = parse(&text);
        let errors = invalid(documents[0].value.clone());
        assert_eq!(errors, [
            "spec.template.spec.affinity: field not supported by bramble",
            "spec.template.spec.containers[0].ports[1].containerPort: Invalid value: 91000: must be between 1 and 65535, inclusive",
        ]);
    }

    #[test]
    fn type_errors_unsupported_fields_and_validation_together() {
        let documents = parse(
            "\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  hostPID: true
  containers:
  - name: web
    image: nginx
    ports:
    - containerPort: http
    lifecycle:
      preStop:
        exec: {command: [sleep, '5']}
  - name: web
    image: nginx
",
        );
        let errors = invalid(documents[0].value.clone());
        assert_eq!(errors, [
            "spec.containers[0].ports[0].containerPort: Invalid value: \"string\": expected an integer",
            "spec.containers[0].lifecycle: field not supported by bramble",
            "spec.hostPID: field not supported by bramble",
            "spec.containers[1].name: Duplicate value: \"web\"",
        ]);
    }

    #[test]
    fn yaml_1_1_octal_modes_are_read_as_kubernetes_reads_them() {
        let documents = parse(
            "\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: web, image: nginx, volumeMounts: [{name: conf, mountPath: /etc/conf}]}]
  volumes:
  - name: conf
    secret:
      secretName: conf
      defaultMode: 0400
      items: [{key: a, path: a, mode: 0644}]
",
        );
        let AnyObject::Pod(pod) = decode(documents[0].value.clone()) else {
            panic!("expected a Pod");
        };
        let secret = pod.spec.volumes[0].secret.clone().unwrap_or_default();
        assert_eq!(secret.default_mode, Some(0o400));
        assert_eq!(secret.items[0].mode, Some(0o644));
        // Not octal: still a type error.
        let errors = invalid(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "x"}], "terminationGracePeriodSeconds": "089"}}),
        );
        assert_eq!(errors, ["spec.terminationGracePeriodSeconds: Invalid value: \"string\": expected an integer"]);
    }

    #[test]
    fn an_undecodable_array_element_still_reports_its_error() {
        // NodeAddress requires `type` and `address`: no placeholder fits, so
        // decoding stops with the errors found so far.
        let errors = invalid(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "pi"},
            "status": {"addresses": [{"address": "10.0.0.2"}]}
        }));
        assert_eq!(errors, ["status.addresses[0].type: Required value"]);
    }

    #[test]
    fn manifest_to_objects_end_to_end() {
        let text = "\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data:
  nginx.conf: |
    server { listen 80; }
binaryData:
  logo.png: iVBORw0KGgo=
";
        let objects: Vec<Kind> = parse(text)
            .into_iter()
            .map(|d| decode(d.value).kind())
            .collect();
        assert_eq!(objects, [Kind::Service, Kind::ConfigMap]);
    }

    #[test]
    fn crlf_line_endings() {
        let text = "apiVersion: v1\r\nkind: List\r\nitems:\r\n- apiVersion: v1\r\n  kind: Namespace\r\n  metadata: {name: a}\r\n---\r\napiVersion: v1\r\nkind: Namespace\r\nmetadata:\r\n  name: b\r\n";
        let documents = parse(text);
        let lines: Vec<usize> = documents.iter().map(|d| d.line).collect();
        assert_eq!(lines, [4, 8]);
        assert_eq!(documents[1].value["metadata"]["name"], "b");
    }
}

//! Validation of API objects: every problem reported at once with its field path.
//!
//! [`validate`] checks one object the way Kubernetes' API server does (names,
//! labels, pod specs, workloads, services, config) and returns every
//! [`FieldError`] it finds, never stopping at the first. [`validate_update`]
//! adds the rules about what an update may change. Messages follow
//! Kubernetes' wording, so `kubectl` users see familiar errors:
//!
//! ```text
//! spec.containers[1].image: Required value
//! spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never", "OnFailure"
//! ```
//!
//! Where Kubernetes fills in defaults before validating, an absent or empty
//! optional value here means "the default" and is accepted. One exception:
//! probe `periodSeconds`, `timeoutSeconds` and thresholds, when present, must
//! be at least 1 (Kubernetes silently turns an explicit 0 into the default),
//! so that the agent never sees a zero period.
//!
//! Choices where bramble is stricter than Kubernetes, on purpose: resource
//! names are limited to `cpu`, `memory` and `ephemeral-storage`; capability
//! names must be upper case without `CAP_`; mount paths and hostPath paths
//! must be absolute; `spec.clusterIP` must be IPv4. As in Kubernetes, a key
//! in both a Secret's `data` and `stringData` is fine: `stringData` wins.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use serde_json::Value;

use crate::api::*;
use crate::kinds::AnyObject;
use crate::meta::{IntOrString, LabelSelector, ObjectMeta, StatusCause};
use crate::quantity::Quantity;
use crate::Kind;

pub mod services;

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `spec.containers[1].image` (map keys in
    /// brackets: `data[app.conf]`).
    pub path: String,
    /// What is wrong with it.
    pub kind: FieldErrorKind,
}

/// What is wrong with a field (Kubernetes' `field.ErrorType`, plus fields
/// bramble does not support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing or empty.
    Required,
    /// A field required in this case is missing (`Required value: detail`).
    RequiredBecause {
        /// Why it is required.
        detail: String,
    },
    /// The value is malformed or out of range.
    Invalid {
        /// The offending value as text (shown quoted unless it is an integer).
        value: String,
        /// Why it is invalid.
        detail: String,
    },
    /// The value is not one of a fixed set.
    NotSupported {
        /// The offending value.
        value: String,
        /// The values that are accepted.
        supported: Vec<String>,
    },
    /// The value repeats one that must be unique.
    Duplicate {
        /// The repeated value.
        value: String,
    },
    /// The field may not be set or changed here.
    Forbidden {
        /// Why.
        detail: String,
    },
    /// The value is longer than allowed.
    TooLong {
        /// The maximum length in bytes.
        max: usize,
    },
    /// A field that Kubernetes knows but bramble does not support.
    Unsupported,
    /// The value has the wrong JSON type. `detail` reads like
    /// `"string": expected an integer` (the type found, then what was expected).
    TypeError {
        /// The type found and the type expected.
        detail: String,
    },
}

impl FieldError {
    /// An error of `kind` at `path`.
    pub fn new(path: impl Into<String>, kind: FieldErrorKind) -> Self {
        FieldError {
            path: path.into(),
            kind,
        }
    }

    /// `path: Required value`.
    pub fn required(path: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Required)
    }

    /// `path: Required value: detail`.
    pub fn required_detail(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            path,
            FieldErrorKind::RequiredBecause {
                detail: detail.into(),
            },
        )
    }

    /// `path: Invalid value: "value": detail`.
    pub fn invalid(
        path: impl Into<String>,
        value: impl fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            path,
            FieldErrorKind::Invalid {
                value: value.to_string(),
                detail: detail.into(),
            },
        )
    }

    /// `path: Unsupported value: "value": supported values: "a", "b"`.
    pub fn not_supported(
        path: impl Into<String>,
        value: impl fmt::Display,
        supported: &[&str],
    ) -> Self {
        Self::new(
            path,
            FieldErrorKind::NotSupported {
                value: value.to_string(),
                supported: supported.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    /// `path: Duplicate value: "value"`.
    pub fn duplicate(path: impl Into<String>, value: impl fmt::Display) -> Self {
        Self::new(
            path,
            FieldErrorKind::Duplicate {
                value: value.to_string(),
            },
        )
    }

    /// `path: Forbidden: detail`.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            path,
            FieldErrorKind::Forbidden {
                detail: detail.into(),
            },
        )
    }

    /// `path: Too long: may not be more than MAX bytes`.
    pub fn too_long(path: impl Into<String>, max: usize) -> Self {
        Self::new(path, FieldErrorKind::TooLong { max })
    }

    /// `path: field not supported by bramble`.
    pub fn unsupported(path: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Unsupported)
    }

    /// `path: Invalid value: detail` for a value of the wrong JSON type.
    pub fn type_error(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            path,
            FieldErrorKind::TypeError {
                detail: detail.into(),
            },
        )
    }

    /// Kubernetes' `StatusCause` reason for this error (`FieldValueRequired`,
    /// `FieldValueInvalid`, ...; `FieldValueUnknown` for fields bramble does
    /// not support).
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required | FieldErrorKind::RequiredBecause { .. } => {
                "FieldValueRequired"
            }
            FieldErrorKind::Invalid { .. } => "FieldValueInvalid",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            FieldErrorKind::Duplicate { .. } => "FieldValueDuplicate",
            FieldErrorKind::Forbidden { .. } => "FieldValueForbidden",
            FieldErrorKind::TooLong { .. } => "FieldValueTooLong",
            FieldErrorKind::Unsupported => "FieldValueUnknown",
            FieldErrorKind::TypeError { .. } => "FieldValueTypeInvalid",
        }
    }

    /// The message without the path (what Kubernetes puts in a
    /// `StatusCause`'s `message`), e.g. `Required value`.
    pub fn body(&self) -> String {
        match &self.kind {
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::RequiredBecause { detail } => format!("Required value: {detail}"),
            FieldErrorKind::Invalid { value, detail } => {
                if detail.is_empty() {
                    format!("Invalid value: {}", show(value))
                } else {
                    format!("Invalid value: {}: {detail}", show(value))
                }
            }
            FieldErrorKind::NotSupported { value, supported } => {
                if supported.is_empty() {
                    format!("Unsupported value: {}", show(value))
                } else {
                    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                    format!(
                        "Unsupported value: {}: supported values: {}",
                        show(value),
                        list.join(", ")
                    )
                }
            }
            FieldErrorKind::Duplicate { value } => format!("Duplicate value: {}", show(value)),
            FieldErrorKind::Forbidden { detail } => format!("Forbidden: {detail}"),
            FieldErrorKind::TooLong { max } => {
                let unit = if *max == 1 { "byte" } else { "bytes" };
                format!("Too long: may not be more than {max} {unit}")
            }
            FieldErrorKind::Unsupported => "field not supported by bramble".to_string(),
            FieldErrorKind::TypeError { detail } => format!("Invalid value: {detail}"),
        }
    }

    /// This error as a Kubernetes `StatusCause`.
    pub fn to_cause(&self) -> StatusCause {
        StatusCause {
            reason: self.reason().to_string(),
            message: self.body(),
            field: self.path.clone(),
        }
    }
}

/// A value as Kubernetes shows it: integers bare, anything else quoted.
fn show(value: &str) -> String {
    if !value.is_empty() && value.parse::<i64>().is_ok() {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.body())
        } else {
            write!(f, "{}: {}", self.path, self.body())
        }
    }
}

impl std::error::Error for FieldError {}

// ---------------------------------------------------------------------------
// Paths and the error list
// ---------------------------------------------------------------------------

/// `base.name`, or `name` at the root.
fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[index]`.
fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// `base[key]`, for map entries.
fn key(base: &str, key: &str) -> String {
    format!("{base}[{key}]")
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    fn required(&mut self, path: String) {
        self.push(FieldError::required(path));
    }

    fn invalid(&mut self, path: String, value: impl fmt::Display, detail: impl Into<String>) {
        self.push(FieldError::invalid(path, value, detail));
    }

    /// One `Invalid` error per message, as Kubernetes reports them.
    fn invalid_each(&mut self, path: &str, value: &str, messages: Vec<String>) {
        for message in messages {
            self.invalid(path.to_string(), value, message);
        }
    }

    fn not_supported(&mut self, path: String, value: &str, supported: &[&str]) {
        self.push(FieldError::not_supported(path, value, supported));
    }

    fn forbidden(&mut self, path: String, detail: impl Into<String>) {
        self.push(FieldError::forbidden(path, detail));
    }

    /// Check an optional enumerated value; empty means the default.
    fn one_of(&mut self, path: String, value: Option<&String>, supported: &[&str]) {
        if let Some(value) = value {
            if !value.is_empty() && !supported.contains(&value.as_str()) {
                self.not_supported(path, value, supported);
            }
        }
    }

    fn non_negative(&mut self, path: String, value: Option<i64>) {
        if let Some(value) = value {
            if value < 0 {
                self.invalid(path, value, "must be greater than or equal to 0");
            }
        }
    }

    fn at_least_one(&mut self, path: String, value: Option<i64>) {
        if let Some(value) = value {
            if value < 1 {
                self.invalid(path, value, "must be greater than or equal to 1");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Name and value formats (Kubernetes' apimachinery `validation` package)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;
const MAX_CONFIG_SIZE: usize = 1024 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Kubernetes' `RegexError`: the message, examples and the regex.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut out = message.to_string();
    if examples.is_empty() {
        out.push_str(&format!(" (regex used for validation is '{format}')"));
        return out;
    }
    out.push_str(" (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{format}')"));
    out
}

fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_part(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Messages for a value that is not a DNS-1123 label (empty when it is one).
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errors.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns_label(value) {
        errors.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errors
}

/// Messages for a value that is not a DNS-1123 subdomain (empty when it is one).
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !value.split('.').all(matches_dns_label) {
        errors.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// Messages for a value that is not a DNS-1035 label (empty when it is one).
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errors.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns_label(value) || !value.bytes().next().is_some_and(|b| b.is_ascii_lowercase()) {
        errors.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errors
}

/// Messages for a value that is not a qualified name (a label or annotation
/// key: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errors.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !matches_qualified_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// Messages for a value that is not a valid label value (empty or a
/// qualified-name part of at most 63 characters).
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errors.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !value.is_empty() && !matches_qualified_part(value) {
        errors.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// Messages for a value that is not a valid port name (IANA_SVC_NAME).
pub fn is_valid_port_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 15 {
        errors.push(max_len_error(15));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errors.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !value.bytes().any(|b| b.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_string());
    }
    if value.contains("--") {
        errors.push("must not contain consecutive hyphens".to_string());
    }
    if value.starts_with('-') || value.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_string());
    }
    errors
}

/// Messages for a value that is not a valid ConfigMap or Secret key.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        errors.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errors.push("must not be '.'".to_string());
    } else if value == ".." {
        errors.push("must not be '..'".to_string());
    } else if value.starts_with("..") {
        errors.push("must not start with '..'".to_string());
    }
    errors
}

fn port_number_error(port: i64) -> Option<&'static str> {
    (!(1..=65535).contains(&port)).then_some("must be between 1 and 65535, inclusive")
}

/// Kubernetes' rule for `metadata.generateName`: a trailing `-` is allowed.
fn mask_trailing_dash(value: &str) -> String {
    match value.strip_suffix('-') {
        Some(rest) if !rest.is_empty() => format!("{rest}a"),
        _ => value.to_string(),
    }
}

/// Messages for `name` as the name of an object of `kind` (DNS-1123 label for
/// namespaces, DNS-1035 label for services, DNS-1123 subdomain otherwise).
pub fn name_errors(kind: Kind, name: &str) -> Vec<String> {
    match kind {
        Kind::Namespace => is_dns1123_label(name),
        Kind::Service => is_dns1035_label(name),
        _ => is_dns1123_subdomain(name),
    }
}

fn labels_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in &selector.match_expressions {
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({})", req.key, req.values.join(",")),
            "NotIn" => format!("{} notin ({})", req.key, req.values.join(",")),
            "Exists" => req.key.clone(),
            "DoesNotExist" => format!("!{}", req.key),
            other => format!("{} {other} ({})", req.key, req.values.join(",")),
        });
    }
    parts.join(",")
}

fn is_absolute(path: &str) -> bool {
    path.starts_with('/')
}

fn has_backsteps(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

fn is_cidr(value: &str) -> bool {
    let Some((ip, bits)) = value.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    if bits.to_string() != value.split_once('/').map_or("", |(_, b)| b) {
        return false;
    }
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------

fn validate_labels(labels: &BTreeMap<String, String>, path: &str, errs: &mut Errors) {
    for (k, v) in labels {
        errs.invalid_each(path, k, is_qualified_name(k));
        errs.invalid_each(path, v, is_valid_label_value(v));
    }
}

fn validate_annotations(annotations: &BTreeMap<String, String>, path: &str, errs: &mut Errors) {
    let mut total = 0;
    for (k, v) in annotations {
        errs.invalid_each(path, k, is_qualified_name(&k.to_ascii_lowercase()));
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE));
    }
}

const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

fn validate_meta(meta: &ObjectMeta, kind: Kind, errs: &mut Errors) {
    let name = meta.name.as_deref().unwrap_or("");
    let generate_name = meta.generate_name.as_deref().unwrap_or("");
    if !name.is_empty() {
        errs.invalid_each("metadata.name", name, name_errors(kind, name));
    } else if generate_name.is_empty() {
        errs.required("metadata.name".into());
    }
    if !generate_name.is_empty() {
        errs.invalid_each(
            "metadata.generateName",
            generate_name,
            name_errors(kind, &mask_trailing_dash(generate_name)),
        );
    }
    let namespace = meta.namespace.as_deref().unwrap_or("");
    if !namespace.is_empty() {
        if kind.namespaced() {
            errs.invalid_each("metadata.namespace", namespace, is_dns1123_label(namespace));
        } else {
            errs.forbidden("metadata.namespace".into(), "not allowed on this type");
        }
    }
    errs.non_negative("metadata.generation".into(), meta.generation);
    validate_labels(&meta.labels, "metadata.labels", errs);
    validate_annotations(&meta.annotations, "metadata.annotations", errs);
    let mut controllers = 0;
    for (i, owner) in meta.owner_references.iter().enumerate() {
        let path = index("metadata.ownerReferences", i);
        for (field, value) in [
            ("apiVersion", &owner.api_version),
            ("kind", &owner.kind),
            ("name", &owner.name),
            ("uid", &owner.uid),
        ] {
            if value.is_empty() {
                errs.required(child(&path, field));
            }
        }
        if owner.controller == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errs.invalid(
            "metadata.ownerReferences".into(),
            controllers,
            "Only one reference can have Controller set to true",
        );
    }
    for (i, finalizer) in meta.finalizers.iter().enumerate() {
        let path = index("metadata.finalizers", i);
        let messages = is_qualified_name(finalizer);
        if !messages.is_empty() {
            errs.invalid_each(&path, finalizer, messages);
        } else if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer.as_str()) {
            errs.invalid(
                path,
                finalizer,
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }
}

fn validate_selector(selector: &LabelSelector, path: &str, errs: &mut Errors) {
    validate_labels(&selector.match_labels, &child(path, "matchLabels"), errs);
    for (i, req) in selector.match_expressions.iter().enumerate() {
        let path = index(&child(path, "matchExpressions"), i);
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if req.values.is_empty() {
                    errs.required(child(&path, "values"));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !req.values.is_empty() {
                    errs.forbidden(
                        child(&path, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            _ => errs.not_supported(
                child(&path, "operator"),
                &req.operator,
                &["DoesNotExist", "Exists", "In", "NotIn"],
            ),
        }
        if req.key.is_empty() {
            errs.required(child(&path, "key"));
        } else {
            errs.invalid_each(&child(&path, "key"), &req.key, is_qualified_name(&req.key));
        }
    }
}

// ---------------------------------------------------------------------------
// Pod spec
// ---------------------------------------------------------------------------

const RESOURCE_NAMES: [&str; 3] = ["cpu", "ephemeral-storage", "memory"];
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const TAINT_EFFECTS: [&str; 3] = ["NoExecute", "NoSchedule", "PreferNoSchedule"];
const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

fn validate_quantity(quantity: &Quantity, path: String, errs: &mut Errors) {
    match quantity.parse() {
        Err(err) => errs.invalid(path, &quantity.0, err.to_string()),
        Ok(parsed) if parsed.is_negative() => {
            errs.invalid(path, &quantity.0, "must be greater than or equal to 0")
        }
        Ok(_) => {}
    }
}

fn validate_resources(resources: &ResourceRequirements, path: &str, errs: &mut Errors) {
    for (section, map) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        for (name, quantity) in map {
            let entry = key(&child(path, section), name);
            if !RESOURCE_NAMES.contains(&name.as_str()) {
                errs.not_supported(entry.clone(), name, &RESOURCE_NAMES);
            }
            validate_quantity(quantity, entry, errs);
        }
    }
    for (name, request) in &resources.requests {
        let Some(limit) = resources.limits.get(name) else {
            continue;
        };
        if let (Ok(req), Ok(lim)) = (request.parse(), limit.parse()) {
            if req > lim {
                errs.invalid(
                    key(&child(path, "requests"), name),
                    &request.0,
                    format!("must be less than or equal to {name} limit of {}", limit.0),
                );
            }
        }
    }
}

fn validate_port_num_or_name(port: &IntOrString, path: String, errs: &mut Errors) {
    match port {
        IntOrString::Int(n) => {
            if let Some(msg) = port_number_error(*n) {
                errs.invalid(path, n, msg);
            }
        }
        IntOrString::String(name) => errs.invalid_each(&path, name, is_valid_port_name(name)),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn validate_probe(probe: &Probe, kind: ProbeKind, path: &str, errs: &mut Errors) {
    let handlers: Vec<&str> = [
        probe.exec.is_some().then_some("exec"),
        probe.http_get.is_some().then_some("httpGet"),
        probe.tcp_socket.is_some().then_some("tcpSocket"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match handlers.as_slice() {
        [] => errs.required(path.to_string()),
        [_] => {}
        [_, rest @ ..] => {
            for handler in rest {
                errs.forbidden(
                    child(path, handler),
                    "may not specify more than 1 handler type",
                );
            }
        }
    }
    if let Some(exec) = &probe.exec {
        if exec.command.is_empty() {
            errs.required(child(path, "exec.command"));
        }
    }
    if let Some(http) = &probe.http_get {
        let http_path = child(path, "httpGet");
        validate_port_num_or_name(&http.port, child(&http_path, "port"), errs);
        errs.one_of(
            child(&http_path, "scheme"),
            http.scheme.as_ref(),
            &["HTTP", "HTTPS"],
        );
        for (i, header) in http.http_headers.iter().enumerate() {
            let name = &header.name;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                errs.invalid(
                    child(&index(&child(&http_path, "httpHeaders"), i), "name"),
                    name,
                    regex_error(
                        "a valid HTTP header must consist of alphanumeric characters or '-'",
                        "[-A-Za-z0-9]+",
                        &["X-Header-Name"],
                    ),
                );
            }
        }
    }
    if let Some(tcp) = &probe.tcp_socket {
        validate_port_num_or_name(&tcp.port, child(path, "tcpSocket.port"), errs);
    }
    errs.non_negative(
        child(path, "initialDelaySeconds"),
        probe.initial_delay_seconds,
    );
    errs.at_least_one(child(path, "periodSeconds"), probe.period_seconds);
    errs.at_least_one(child(path, "timeoutSeconds"), probe.timeout_seconds);
    errs.at_least_one(child(path, "successThreshold"), probe.success_threshold);
    errs.at_least_one(child(path, "failureThreshold"), probe.failure_threshold);
    if kind != ProbeKind::Readiness {
        if let Some(success) = probe.success_threshold {
            if success > 1 {
                errs.invalid(child(path, "successThreshold"), success, "must be 1");
            }
        }
    }
}

/// A UID or GID as Kubernetes takes it.
fn validate_id(path: String, id: i64, errs: &mut Errors) {
    if !(0..=i64::from(i32::MAX)).contains(&id) {
        errs.invalid(path, id, "must be between 0 and 2147483647, inclusive");
    }
}

/// `seccompProfile` (Kubernetes' `validateSeccompProfileField`).
fn validate_seccomp_profile(profile: &SeccompProfile, path: &str, errs: &mut Errors) {
    let local = profile.localhost_profile.as_deref();
    match profile.profile_type.as_str() {
        "Localhost" => match local {
            None => errs.push(FieldError::required_detail(
                child(path, "localhostProfile"),
                "must be set when seccomp type is Localhost",
            )),
            Some(file) => {
                let file_path = child(path, "localhostProfile");
                if file.starts_with('/') {
                    errs.invalid(file_path.clone(), file, "must be a relative path");
                }
                if file.split('/').any(|part| part == "..") {
                    errs.invalid(file_path, file, "must not contain '..'");
                }
            }
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(file) = local {
                errs.invalid(
                    child(path, "localhostProfile"),
                    file,
                    "can only be set when seccomp type is Localhost",
                );
            }
        }
        other => errs.not_supported(
            child(path, "type"),
            other,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        ),
    }
}

/// `spec.securityContext`.
fn validate_pod_security_context(sc: &PodSecurityContext, path: &str, errs: &mut Errors) {
    for (field, id) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
    ] {
        if let Some(id) = id {
            validate_id(child(path, field), id, errs);
        }
    }
    for (i, group) in sc.supplemental_groups.iter().enumerate() {
        validate_id(index(&child(path, "supplementalGroups"), i), *group, errs);
    }
    if let Some(profile) = &sc.seccomp_profile {
        validate_seccomp_profile(profile, &child(path, "seccompProfile"), errs);
    }
}

fn validate_security_context(sc: &SecurityContext, path: &str, errs: &mut Errors) {
    for (field, id) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
    ] {
        if let Some(id) = id {
            validate_id(child(path, field), id, errs);
        }
    }
    if let Some(profile) = &sc.seccomp_profile {
        validate_seccomp_profile(profile, &child(path, "seccompProfile"), errs);
    }
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errs.invalid(
                path.to_string(),
                "",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
        let adds_sys_admin = sc.capabilities.as_ref().is_some_and(|caps| {
            caps.add
                .iter()
                .any(|cap| cap == "CAP_SYS_ADMIN" || cap == "SYS_ADMIN")
        });
        if adds_sys_admin {
            errs.invalid(
                path.to_string(),
                "",
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            );
        }
    }
    if let Some(caps) = &sc.capabilities {
        for (field, list) in [("add", &caps.add), ("drop", &caps.drop)] {
            for (i, cap) in list.iter().enumerate() {
                let cap_path = index(&child(path, &format!("capabilities.{field}")), i);
                if cap == "ALL" {
                    continue;
                }
                if cap.starts_with("CAP_") {
                    errs.invalid(
                        cap_path,
                        cap,
                        "capability names are written without the `CAP_` prefix (e.g. 'NET_ADMIN')",
                    );
                } else if cap.is_empty()
                    || !cap.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                {
                    errs.invalid(
                        cap_path,
                        cap,
                        "must consist of upper case letters and '_' (e.g. 'NET_ADMIN' or 'ALL')",
                    );
                }
            }
        }
    }
}

/// The field paths bramble's downward API serves to `env[].valueFrom.fieldRef`.
const DOWNWARD_API_FIELDS: [&str; 7] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.hostIP",
    "status.podIP",
    "status.podIPs",
];

fn validate_field_ref(field_ref: &ObjectFieldSelector, path: &str, errs: &mut Errors) {
    if let Some(version) = &field_ref.api_version {
        if !version.is_empty() && version != "v1" {
            errs.not_supported(child(path, "apiVersion"), version, &["v1"]);
        }
    }
    let field_path = &field_ref.field_path;
    let fp = child(path, "fieldPath");
    if field_path.is_empty() {
        errs.required(fp);
        return;
    }
    if DOWNWARD_API_FIELDS.contains(&field_path.as_str()) {
        return;
    }
    for prefix in ["metadata.labels", "metadata.annotations"] {
        if let Some(subscript) = field_path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
        {
            let messages = is_qualified_name(&subscript.to_ascii_lowercase());
            errs.invalid_each(&fp, field_path, messages);
            return;
        }
    }
    let mut supported: Vec<&str> = DOWNWARD_API_FIELDS.to_vec();
    supported.extend(["metadata.annotations['<KEY>']", "metadata.labels['<KEY>']"]);
    supported.sort_unstable();
    errs.not_supported(fp, field_path, &supported);
}

fn validate_key_selector(selector: &KeySelector, path: &str, errs: &mut Errors) {
    if selector.name.is_empty() {
        errs.required(child(path, "name"));
    } else {
        errs.invalid_each(
            &child(path, "name"),
            &selector.name,
            is_dns1123_subdomain(&selector.name),
        );
    }
    if selector.key.is_empty() {
        errs.required(child(path, "key"));
    } else {
        errs.invalid_each(
            &child(path, "key"),
            &selector.key,
            is_config_map_key(&selector.key),
        );
    }
}

fn validate_env(env: &[EnvVar], path: &str, errs: &mut Errors) {
    for (i, var) in env.iter().enumerate() {
        let var_path = index(path, i);
        if var.name.is_empty() {
            errs.required(child(&var_path, "name"));
        } else if var.name.contains('=') || !var.name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            errs.invalid(
                child(&var_path, "name"),
                &var.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        let from_path = child(&var_path, "valueFrom");
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.invalid(
                from_path.clone(),
                "",
                "may not be specified when `value` is not empty",
            );
        }
        let sources = usize::from(from.field_ref.is_some())
            + usize::from(from.resource_field_ref.is_some())
            + usize::from(from.config_map_key_ref.is_some())
            + usize::from(from.secret_key_ref.is_some());
        if sources == 0 {
            errs.invalid(
                from_path.clone(),
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            );
        } else if sources > 1 {
            errs.invalid(
                from_path.clone(),
                "",
                "may not have more than one field specified at a time",
            );
        }
        if let Some(field_ref) = &from.field_ref {
            validate_field_ref(field_ref, &child(&from_path, "fieldRef"), errs);
        }
        if let Some(selector) = &from.config_map_key_ref {
            validate_key_selector(selector, &child(&from_path, "configMapKeyRef"), errs);
        }
        if let Some(selector) = &from.secret_key_ref {
            validate_key_selector(selector, &child(&from_path, "secretKeyRef"), errs);
        }
        if let Some(selector) = &from.resource_field_ref {
            validate_resource_field_ref(selector, &child(&from_path, "resourceFieldRef"), errs);
        }
    }
}

/// The resources `resourceFieldRef` may name.
const RESOURCE_FIELDS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

/// `resourceFieldRef` (Kubernetes' `validateContainerResourceFieldSelector`
/// and `validateContainerResourceDivisor`).
fn validate_resource_field_ref(selector: &ResourceFieldSelector, path: &str, errs: &mut Errors) {
    if selector.resource.is_empty() {
        errs.required(child(path, "resource"));
        return;
    }
    if !RESOURCE_FIELDS.contains(&selector.resource.as_str()) {
        errs.not_supported(
            child(path, "resource"),
            &selector.resource,
            &RESOURCE_FIELDS,
        );
        return;
    }
    let Some(divisor) = &selector.divisor else {
        return;
    };
    let allowed: &[&str] = if selector.resource.ends_with(".cpu") {
        &["1m", "1"]
    } else {
        &[
            "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
        ]
    };
    let parsed = divisor
        .as_str()
        .parse::<crate::quantity::ParsedQuantity>()
        .ok();
    let fits = allowed.iter().any(|unit| {
        unit.parse::<crate::quantity::ParsedQuantity>().ok() == parsed && parsed.is_some()
    });
    if !fits {
        let resource = selector.resource.split('.').nth(1).unwrap_or("");
        let message = if resource == "cpu" {
            "only divisor's values 1m and 1 are supported with the cpu resource".to_string()
        } else {
            format!(
                "only divisor's values {} are supported with the {resource} resource",
                allowed.join(", ")
            )
        };
        errs.invalid(child(path, "divisor"), divisor.as_str(), message);
    }
}

/// `envFrom` (Kubernetes' `validateEnvFrom`).
fn validate_env_from(sources: &[EnvFromSource], path: &str, errs: &mut Errors) {
    for (i, source) in sources.iter().enumerate() {
        let source_path = index(path, i);
        if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty()) {
            if prefix.contains('=') || !prefix.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                errs.invalid(
                    child(&source_path, "prefix"),
                    prefix,
                    "a valid environment variable name must consist only of printable ASCII characters other than '='",
                );
            }
        }
        let refs = [
            ("configMapRef", &source.config_map_ref),
            ("secretRef", &source.secret_ref),
        ];
        let given = refs.iter().filter(|(_, r)| r.is_some()).count();
        if given == 0 {
            errs.invalid(
                source_path.clone(),
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            );
        } else if given > 1 {
            errs.invalid(
                source_path.clone(),
                "",
                "may not have more than one field specified at a time",
            );
        }
        for (field, reference) in refs {
            let Some(reference) = reference else { continue };
            let name_path = child(&child(&source_path, field), "name");
            if reference.name.is_empty() {
                errs.required(name_path);
            } else {
                errs.invalid_each(
                    &name_path,
                    &reference.name,
                    is_dns1123_subdomain(&reference.name),
                );
            }
        }
    }
}

/// What the containers of one pod share while they are validated.
struct PodContext<'a> {
    volume_names: &'a BTreeSet<String>,
    container_names: BTreeSet<String>,
    host_ports: BTreeSet<(i64, String)>,
    host_network: bool,
}

fn validate_container(
    container: &Container,
    path: &str,
    init: bool,
    ctx: &mut PodContext<'_>,
    errs: &mut Errors,
) {
    let name_path = child(path, "name");
    if container.name.is_empty() {
        errs.required(name_path);
    } else {
        let messages = is_dns1123_label(&container.name);
        if !messages.is_empty() {
            errs.invalid_each(&name_path, &container.name, messages);
        } else if !ctx.container_names.insert(container.name.clone()) {
            errs.push(FieldError::duplicate(name_path, &container.name));
        }
    }
    if container.image.trim().is_empty() {
        errs.required(child(path, "image"));
    } else if container.image.trim() != container.image {
        errs.invalid(
            child(path, "image"),
            &container.image,
            "must not have leading or trailing whitespace",
        );
    }
    errs.one_of(
        child(path, "imagePullPolicy"),
        container.image_pull_policy.as_ref(),
        &["Always", "IfNotPresent", "Never"],
    );

    let ports_path = child(path, "ports");
    let mut port_names = BTreeSet::new();
    for (i, port) in container.ports.iter().enumerate() {
        let port_path = index(&ports_path, i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let messages = is_valid_port_name(name);
            if !messages.is_empty() {
                errs.invalid_each(&child(&port_path, "name"), name, messages);
            } else if !port_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&port_path, "name"), name));
            }
        }
        if port.container_port == 0 {
            errs.required(child(&port_path, "containerPort"));
        } else if let Some(msg) = port_number_error(port.container_port) {
            errs.invalid(child(&port_path, "containerPort"), port.container_port, msg);
        }
        let protocol = port
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        errs.one_of(
            child(&port_path, "protocol"),
            port.protocol.as_ref(),
            &PROTOCOLS,
        );
        let host_port = port.host_port.unwrap_or(0);
        if host_port != 0 {
            if let Some(msg) = port_number_error(host_port) {
                errs.invalid(child(&port_path, "hostPort"), host_port, msg);
            }
            if ctx.host_network && host_port != port.container_port {
                errs.invalid(
                    child(&port_path, "hostPort"),
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                );
            }
        }
        let published = if ctx.host_network {
            port.container_port
        } else {
            host_port
        };
        if published > 0 && !ctx.host_ports.insert((published, protocol.to_string())) {
            errs.push(FieldError::duplicate(
                child(&port_path, "hostPort"),
                format!("{published}/{protocol}"),
            ));
        }
    }

    validate_env(&container.env, &child(path, "env"), errs);
    validate_env_from(&container.env_from, &child(path, "envFrom"), errs);
    if let Some(resources) = &container.resources {
        validate_resources(resources, &child(path, "resources"), errs);
    }

    let mounts_path = child(path, "volumeMounts");
    let mut mount_paths = BTreeSet::new();
    for (i, mount) in container.volume_mounts.iter().enumerate() {
        let mount_path = index(&mounts_path, i);
        if mount.name.is_empty() {
            errs.required(child(&mount_path, "name"));
        } else if !ctx.volume_names.contains(&mount.name) {
            errs.invalid(
                child(&mount_path, "name"),
                &mount.name,
                "must match the name of a volume of the pod (`volumes`)",
            );
        }
        if mount.mount_path.is_empty() {
            errs.required(child(&mount_path, "mountPath"));
        } else {
            if !is_absolute(&mount.mount_path) {
                errs.invalid(
                    child(&mount_path, "mountPath"),
                    &mount.mount_path,
                    "must be an absolute path",
                );
            }
            if !mount_paths.insert(mount.mount_path.as_str()) {
                errs.invalid(
                    child(&mount_path, "mountPath"),
                    &mount.mount_path,
                    "must be unique",
                );
            }
        }
        if let Some(sub_path) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if is_absolute(sub_path) {
                errs.invalid(
                    child(&mount_path, "subPath"),
                    sub_path,
                    "must be a relative path",
                );
            }
            if has_backsteps(sub_path) {
                errs.invalid(
                    child(&mount_path, "subPath"),
                    sub_path,
                    "must not contain '..'",
                );
            }
        }
    }

    for (field, probe, kind) in [
        (
            "livenessProbe",
            &container.liveness_probe,
            ProbeKind::Liveness,
        ),
        (
            "readinessProbe",
            &container.readiness_probe,
            ProbeKind::Readiness,
        ),
        ("startupProbe", &container.startup_probe, ProbeKind::Startup),
    ] {
        let Some(probe) = probe else {
            continue;
        };
        if init {
            errs.forbidden(child(path, field), "may not be set for init containers");
        } else {
            validate_probe(probe, kind, &child(path, field), errs);
        }
    }
    if let Some(sc) = &container.security_context {
        validate_security_context(sc, &child(path, "securityContext"), errs);
    }
}

fn validate_key_to_path(items: &[KeyToPath], path: &str, errs: &mut Errors) {
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        if item.key.is_empty() {
            errs.required(child(&item_path, "key"));
        }
        if item.path.is_empty() {
            errs.required(child(&item_path, "path"));
        } else {
            if is_absolute(&item.path) {
                errs.invalid(
                    child(&item_path, "path"),
                    &item.path,
                    "must be a relative path",
                );
            }
            if has_backsteps(&item.path) {
                errs.invalid(
                    child(&item_path, "path"),
                    &item.path,
                    "must not contain '..'",
                );
            }
        }
        validate_file_mode(item.mode, child(&item_path, "mode"), errs);
    }
}

fn validate_file_mode(mode: Option<i32>, path: String, errs: &mut Errors) {
    if let Some(mode) = mode {
        if !(0..=0o777).contains(&mode) {
            errs.invalid(
                path,
                mode,
                "must be a number between 0 and 0777 (octal), both inclusive",
            );
        }
    }
}

fn validate_volumes(volumes: &[Volume], path: &str, errs: &mut Errors) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let volume_path = index(path, i);
        let name_path = child(&volume_path, "name");
        if volume.name.is_empty() {
            errs.required(name_path);
        } else {
            let messages = is_dns1123_label(&volume.name);
            if !messages.is_empty() {
                errs.invalid_each(&name_path, &volume.name, messages);
            } else if names.contains(&volume.name) {
                errs.push(FieldError::duplicate(name_path, &volume.name));
            }
            // Mounts of a badly named volume still refer to it.
            names.insert(volume.name.clone());
        }
        let sources: Vec<&str> = [
            volume.empty_dir.is_some().then_some("emptyDir"),
            volume.host_path.is_some().then_some("hostPath"),
            volume.config_map.is_some().then_some("configMap"),
            volume.secret.is_some().then_some("secret"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match sources.as_slice() {
            [] => errs.required(volume_path.clone()),
            [_] => {}
            [_, rest @ ..] => {
                for source in rest {
                    errs.forbidden(
                        child(&volume_path, source),
                        "may not specify more than 1 volume type",
                    );
                }
            }
        }
        if let Some(empty_dir) = &volume.empty_dir {
            let source_path = child(&volume_path, "emptyDir");
            errs.one_of(
                child(&source_path, "medium"),
                empty_dir.medium.as_ref(),
                &["", "Memory"],
            );
            if let Some(limit) = &empty_dir.size_limit {
                validate_quantity(limit, child(&source_path, "sizeLimit"), errs);
            }
        }
        if let Some(host_path) = &volume.host_path {
            let source_path = child(&volume_path, "hostPath");
            let p = &host_path.path;
            if p.is_empty() {
                errs.required(child(&source_path, "path"));
            } else {
                if !is_absolute(p) {
                    errs.invalid(child(&source_path, "path"), p, "must be an absolute path");
                }
                if has_backsteps(p) {
                    errs.invalid(child(&source_path, "path"), p, "must not contain '..'");
                }
            }
            errs.one_of(
                child(&source_path, "type"),
                host_path.type_.as_ref(),
                &HOST_PATH_TYPES,
            );
        }
        if let Some(config_map) = &volume.config_map {
            let source_path = child(&volume_path, "configMap");
            if config_map.name.is_empty() {
                errs.required(child(&source_path, "name"));
            } else {
                errs.invalid_each(
                    &child(&source_path, "name"),
                    &config_map.name,
                    is_dns1123_subdomain(&config_map.name),
                );
            }
            validate_key_to_path(&config_map.items, &child(&source_path, "items"), errs);
            validate_file_mode(
                config_map.default_mode,
                child(&source_path, "defaultMode"),
                errs,
            );
        }
        if let Some(secret) = &volume.secret {
            let source_path = child(&volume_path, "secret");
            if secret.secret_name.is_empty() {
                errs.required(child(&source_path, "secretName"));
            } else {
                errs.invalid_each(
                    &child(&source_path, "secretName"),
                    &secret.secret_name,
                    is_dns1123_subdomain(&secret.secret_name),
                );
            }
            validate_key_to_path(&secret.items, &child(&source_path, "items"), errs);
            validate_file_mode(
                secret.default_mode,
                child(&source_path, "defaultMode"),
                errs,
            );
        }
    }
    names
}

fn validate_tolerations(tolerations: &[Toleration], path: &str, errs: &mut Errors) {
    for (i, toleration) in tolerations.iter().enumerate() {
        let t_path = index(path, i);
        let key_ = toleration.key.as_deref().unwrap_or("");
        let operator = toleration.operator.as_deref().unwrap_or("");
        let value = toleration.value.as_deref().unwrap_or("");
        let effect = toleration.effect.as_deref().unwrap_or("");
        if !key_.is_empty() {
            errs.invalid_each(&child(&t_path, "key"), key_, is_qualified_name(key_));
        } else if operator != "Exists" {
            errs.invalid(
                child(&t_path, "operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        if toleration.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.invalid(
                child(&t_path, "effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
        match operator {
            "" | "Equal" => {
                let messages = is_valid_label_value(value);
                if !messages.is_empty() {
                    errs.invalid(child(&t_path, "value"), value, messages.join(";"));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.invalid(
                        child(&t_path, "operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    );
                }
            }
            _ => errs.not_supported(child(&t_path, "operator"), operator, &["Equal", "Exists"]),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.not_supported(child(&t_path, "effect"), effect, &TAINT_EFFECTS);
        }
    }
}

/// Validate a pod spec at `path` (`spec`, or `spec.template.spec` in a
/// workload, where only restartPolicy `Always` is accepted).
fn validate_pod_spec(spec: &PodSpec, path: &str, template: bool, errs: &mut Errors) {
    let volume_names = validate_volumes(&spec.volumes, &child(path, "volumes"), errs);
    if let Some(sc) = &spec.security_context {
        validate_pod_security_context(sc, &child(path, "securityContext"), errs);
    }
    let mut ctx = PodContext {
        volume_names: &volume_names,
        container_names: BTreeSet::new(),
        host_ports: BTreeSet::new(),
        host_network: spec.host_network == Some(true),
    };
    let init_path = child(path, "initContainers");
    for (i, container) in spec.init_containers.iter().enumerate() {
        validate_container(container, &index(&init_path, i), true, &mut ctx, errs);
    }
    let containers_path = child(path, "containers");
    if spec.containers.is_empty() {
        errs.required(containers_path.clone());
    }
    for (i, container) in spec.containers.iter().enumerate() {
        validate_container(
            container,
            &index(&containers_path, i),
            false,
            &mut ctx,
            errs,
        );
    }
    let restart_policies: &[&str] = if template {
        &["Always"]
    } else {
        &["Always", "Never", "OnFailure"]
    };
    errs.one_of(
        child(path, "restartPolicy"),
        spec.restart_policy.as_ref(),
        restart_policies,
    );
    errs.one_of(
        child(path, "dnsPolicy"),
        spec.dns_policy.as_ref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    validate_labels(&spec.node_selector, &child(path, "nodeSelector"), errs);
    validate_tolerations(&spec.tolerations, &child(path, "tolerations"), errs);
    if let Some(node_name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        errs.invalid_each(
            &child(path, "nodeName"),
            node_name,
            is_dns1123_subdomain(node_name),
        );
    }
    if let Some(hostname) = spec.hostname.as_deref().filter(|n| !n.is_empty()) {
        errs.invalid_each(
            &child(path, "hostname"),
            hostname,
            is_dns1123_label(hostname),
        );
    }
    services::validate_pod_dns(spec, path, errs);
    if let Some(scheduler) = spec.scheduler_name.as_deref().filter(|n| !n.is_empty()) {
        errs.invalid_each(
            &child(path, "schedulerName"),
            scheduler,
            is_dns1123_subdomain(scheduler),
        );
    }
    errs.non_negative(
        child(path, "terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
    );
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if secret.name.is_empty() {
            errs.required(child(&index(&child(path, "imagePullSecrets"), i), "name"));
        }
    }
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

fn validate_template(selector: &LabelSelector, template: &PodTemplateSpec, errs: &mut Errors) {
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        errs.required("spec.selector".into());
    } else {
        validate_selector(selector, "spec.selector", errs);
        if !selector.matches(&template.metadata.labels) {
            errs.invalid(
                "spec.template.metadata.labels".into(),
                labels_string(&template.metadata.labels),
                "`selector` does not match template `labels`",
            );
        }
    }
    validate_labels(
        &template.metadata.labels,
        "spec.template.metadata.labels",
        errs,
    );
    validate_annotations(
        &template.metadata.annotations,
        "spec.template.metadata.annotations",
        errs,
    );
    validate_pod_spec(&template.spec, "spec.template.spec", true, errs);
}

/// A percentage like `25%`, as Kubernetes accepts for maxSurge/maxUnavailable.
fn percent(value: &str) -> Option<i64> {
    let digits = value.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<i64>().unwrap_or(i64::MAX))
}

/// Validate an int-or-percent; returns whether it is zero.
fn validate_int_or_percent(
    value: &IntOrString,
    path: String,
    max_100: bool,
    errs: &mut Errors,
) -> bool {
    match value {
        IntOrString::Int(n) => {
            if *n < 0 {
                errs.invalid(path, n, "must be greater than or equal to 0");
            }
            *n == 0
        }
        IntOrString::String(s) => match percent(s) {
            None => {
                errs.invalid(
                    path,
                    s,
                    regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        &["1%", "93%"],
                    ),
                );
                false
            }
            Some(p) => {
                if max_100 && p > 100 {
                    errs.invalid(path, s, "must not be greater than 100%");
                }
                p == 0
            }
        },
    }
}

/// `surge_default_zero`: DaemonSets default maxSurge to 0, Deployments to 25%.
fn validate_rolling_update(
    update: &RollingUpdate,
    path: &str,
    surge_default_zero: bool,
    errs: &mut Errors,
) {
    let surge_zero = match &update.max_surge {
        Some(v) => validate_int_or_percent(v, child(path, "maxSurge"), false, errs),
        None => surge_default_zero,
    };
    if let Some(unavailable) = &update.max_unavailable {
        let unavailable_zero =
            validate_int_or_percent(unavailable, child(path, "maxUnavailable"), true, errs);
        if unavailable_zero && surge_zero {
            let shown = match unavailable {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => s.clone(),
            };
            errs.invalid(
                child(path, "maxUnavailable"),
                shown,
                "may not be 0 when `maxSurge` is 0",
            );
        }
    }
}

fn validate_deployment(spec: &DeploymentSpec, errs: &mut Errors) {
    errs.non_negative("spec.replicas".into(), spec.replicas.map(i64::from));
    validate_template(&spec.selector, &spec.template, errs);
    if let Some(strategy) = &spec.strategy {
        errs.one_of(
            "spec.strategy.type".into(),
            strategy.type_.as_ref(),
            &["Recreate", "RollingUpdate"],
        );
        if let Some(update) = &strategy.rolling_update {
            if strategy.type_.as_deref() == Some("Recreate") {
                errs.forbidden(
                    "spec.strategy.rollingUpdate".into(),
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            } else {
                validate_rolling_update(update, "spec.strategy.rollingUpdate", false, errs);
            }
        }
    }
    let min_ready = spec.min_ready_seconds.map(i64::from);
    errs.non_negative("spec.minReadySeconds".into(), min_ready);
    errs.non_negative(
        "spec.revisionHistoryLimit".into(),
        spec.revision_history_limit.map(i64::from),
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        if deadline < 0 {
            errs.invalid(
                "spec.progressDeadlineSeconds".into(),
                deadline,
                "must be greater than or equal to 0",
            );
        } else if i64::from(deadline) <= min_ready.unwrap_or(0) {
            errs.invalid(
                "spec.progressDeadlineSeconds".into(),
                deadline,
                "must be greater than minReadySeconds",
            );
        }
    }
}

fn validate_replica_set(spec: &ReplicaSetSpec, errs: &mut Errors) {
    errs.non_negative("spec.replicas".into(), spec.replicas.map(i64::from));
    validate_template(&spec.selector, &spec.template, errs);
    errs.non_negative(
        "spec.minReadySeconds".into(),
        spec.min_ready_seconds.map(i64::from),
    );
}

/// Kubernetes' `ValidateJobSpec`: counts not negative, an Indexed Job
/// needs `completions`, and the pods must run to completion
/// (`restartPolicy` `OnFailure` or `Never`).
fn validate_job(spec: &crate::api::JobSpec, errs: &mut Errors) {
    errs.non_negative("spec.parallelism".into(), spec.parallelism.map(i64::from));
    errs.non_negative("spec.completions".into(), spec.completions.map(i64::from));
    errs.non_negative(
        "spec.backoffLimit".into(),
        spec.backoff_limit.map(i64::from),
    );
    errs.non_negative(
        "spec.ttlSecondsAfterFinished".into(),
        spec.ttl_seconds_after_finished.map(i64::from),
    );
    if let Some(deadline) = spec.active_deadline_seconds {
        if deadline <= 0 {
            errs.invalid(
                "spec.activeDeadlineSeconds".into(),
                deadline,
                "must be greater than 0",
            );
        }
    }
    errs.one_of(
        "spec.completionMode".into(),
        spec.completion_mode.as_ref(),
        &["NonIndexed", "Indexed"],
    );
    if spec.completion_mode.as_deref() == Some("Indexed") && spec.completions.is_none() {
        errs.required("spec.completions".into());
    }
    if let Some(selector) = &spec.selector {
        if spec.manual_selector == Some(true) {
            validate_selector(selector, "spec.selector", errs);
            if !selector.matches(&spec.template.metadata.labels) {
                errs.invalid(
                    "spec.template.metadata.labels".into(),
                    labels_string(&spec.template.metadata.labels),
                    "`selector` does not match template `labels`",
                );
            }
        }
    }
    validate_labels(
        &spec.template.metadata.labels,
        "spec.template.metadata.labels",
        errs,
    );
    validate_pod_spec(&spec.template.spec, "spec.template.spec", false, errs);
    match spec.template.spec.restart_policy.as_deref() {
        None | Some("") => errs.required("spec.template.spec.restartPolicy".into()),
        Some("OnFailure" | "Never") => {}
        Some(other) => errs.not_supported(
            "spec.template.spec.restartPolicy".into(),
            other,
            &["OnFailure", "Never"],
        ),
    }
}

fn validate_daemon_set(spec: &DaemonSetSpec, errs: &mut Errors) {
    validate_template(&spec.selector, &spec.template, errs);
    if let Some(strategy) = &spec.update_strategy {
        errs.one_of(
            "spec.updateStrategy.type".into(),
            strategy.type_.as_ref(),
            &["OnDelete", "RollingUpdate"],
        );
        if let Some(update) = &strategy.rolling_update {
            validate_rolling_update(update, "spec.updateStrategy.rollingUpdate", true, errs);
        }
    }
    errs.non_negative(
        "spec.minReadySeconds".into(),
        spec.min_ready_seconds.map(i64::from),
    );
    errs.non_negative(
        "spec.revisionHistoryLimit".into(),
        spec.revision_history_limit.map(i64::from),
    );
}

// ---------------------------------------------------------------------------
// Service, ConfigMap, Secret, Node, Event
// ---------------------------------------------------------------------------

/// Go's `StdEncoding`: standard alphabet, `=` padding required, line breaks
/// ignored, non-zero trailing bits tolerated.
fn decode_base64(value: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let cleaned: String = value.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    ENGINE.decode(cleaned.as_bytes()).map_err(|err| match err {
        base64::DecodeError::InvalidByte(offset, _)
        | base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("illegal base64 data at input byte {offset}")
        }
        base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => {
            "illegal base64 data: the length must be a multiple of 4, padded with '='".to_string()
        }
    })
}

const BASE64_DETAIL: &str = "must be base64 (standard alphabet, padded with '=')";
const OMITTED: &str = "<value omitted>";

fn validate_config_map(cm: &ConfigMap, errs: &mut Errors) {
    let mut total = 0;
    for (k, v) in &cm.data {
        let path = key("data", k);
        errs.invalid_each(&path, k, is_config_map_key(k));
        if cm.binary_data.contains_key(k) {
            errs.invalid(path, k, "duplicate of key present in binaryData");
        }
        total += v.len();
    }
    for (k, v) in &cm.binary_data {
        let path = key("binaryData", k);
        errs.invalid_each(&path, k, is_config_map_key(k));
        match decode_base64(v) {
            Ok(bytes) => total += bytes.len(),
            Err(err) => errs.invalid(path, OMITTED, format!("{BASE64_DETAIL}: {err}")),
        }
    }
    if total > MAX_CONFIG_SIZE {
        errs.push(FieldError::too_long("data", MAX_CONFIG_SIZE));
    }
}

fn validate_secret(secret: &Secret, errs: &mut Errors) {
    let mut total = 0;
    for (k, v) in &secret.data {
        let path = key("data", k);
        errs.invalid_each(&path, k, is_config_map_key(k));
        match decode_base64(v) {
            Ok(bytes) => total += bytes.len(),
            Err(err) => errs.invalid(path, OMITTED, format!("{BASE64_DETAIL}: {err}")),
        }
    }
    for (k, v) in &secret.string_data {
        let path = key("stringData", k);
        errs.invalid_each(&path, k, is_config_map_key(k));
        total += v.len();
    }
    if total > MAX_CONFIG_SIZE {
        errs.push(FieldError::too_long("data", MAX_CONFIG_SIZE));
    }
    let has = |k: &str| secret.data.contains_key(k) || secret.string_data.contains_key(k);
    let required: &[&str] = match secret.type_.as_deref().unwrap_or("") {
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in required {
        if !has(k) {
            errs.required(key("data", k));
        }
    }
}

fn validate_node(spec: &NodeSpec, errs: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, taint) in spec.taints.iter().enumerate() {
        let path = index("spec.taints", i);
        if taint.key.is_empty() {
            errs.required(child(&path, "key"));
        } else {
            errs.invalid_each(
                &child(&path, "key"),
                &taint.key,
                is_qualified_name(&taint.key),
            );
        }
        if let Some(value) = &taint.value {
            errs.invalid_each(&child(&path, "value"), value, is_valid_label_value(value));
        }
        if taint.effect.is_empty() {
            errs.required(child(&path, "effect"));
        } else if !TAINT_EFFECTS.contains(&taint.effect.as_str()) {
            errs.not_supported(child(&path, "effect"), &taint.effect, &TAINT_EFFECTS);
        }
        if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
            errs.push(FieldError::duplicate(
                path,
                format!("{}:{}", taint.key, taint.effect),
            ));
        }
    }
    const CIDR_DETAIL: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
    if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        if !is_cidr(cidr) {
            errs.invalid("spec.podCIDR".into(), cidr, CIDR_DETAIL);
        }
    }
    for (i, cidr) in spec.pod_cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            errs.invalid(index("spec.podCIDRs", i), cidr, CIDR_DETAIL);
        }
    }
    if let (Some(first), Some(cidr)) = (spec.pod_cidrs.first(), spec.pod_cidr.as_deref()) {
        if !cidr.is_empty() && first != cidr {
            errs.invalid(index("spec.podCIDRs", 0), first, "must match `podCIDR`");
        }
    }
}

fn validate_event(event: &Event, errs: &mut Errors) {
    let involved = &event.involved_object;
    if involved.kind.as_deref().unwrap_or("").is_empty() {
        errs.required("involvedObject.kind".into());
    }
    if involved.name.as_deref().unwrap_or("").is_empty() {
        errs.required("involvedObject.name".into());
    }
    errs.non_negative("count".into(), event.count.map(i64::from));
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Every problem with `obj`, each with its field path; empty when the object
/// is valid.
pub fn validate(obj: &AnyObject) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(obj.metadata(), obj.kind(), &mut errs);
    match obj {
        AnyObject::Namespace(_) => {}
        AnyObject::Node(node) => validate_node(&node.spec, &mut errs),
        AnyObject::Pod(pod) => validate_pod_spec(&pod.spec, "spec", false, &mut errs),
        AnyObject::Service(service) => services::validate_service(&service.spec, &mut errs),
        AnyObject::ConfigMap(cm) => validate_config_map(cm, &mut errs),
        AnyObject::Secret(secret) => validate_secret(secret, &mut errs),
        AnyObject::Event(event) => validate_event(event, &mut errs),
        AnyObject::Deployment(d) => validate_deployment(&d.spec, &mut errs),
        AnyObject::ReplicaSet(rs) => validate_replica_set(&rs.spec, &mut errs),
        AnyObject::DaemonSet(ds) => validate_daemon_set(&ds.spec, &mut errs),
        AnyObject::EndpointSlice(slice) => services::validate_endpoint_slice(slice, &mut errs),
        AnyObject::Endpoints(endpoints) => services::validate_endpoints(endpoints, &mut errs),
        AnyObject::Job(job) => validate_job(&job.spec, &mut errs),
        AnyObject::ControllerRevision(revision) => {
            if revision.revision < 0 {
                errs.invalid(
                    "revision".into(),
                    revision.revision,
                    "must be greater than or equal to 0",
                );
            }
        }
    }
    errs.0
}

const IMMUTABLE: &str = "field is immutable";

/// Every problem with replacing `old` by `new`: everything [`validate`]
/// reports for `new`, plus the fields an update may not change.
///
/// An empty `metadata.namespace`, `spec.clusterIP` or `spec.nodePort` in
/// `new` means "keep the old value": the caller (the API server) carries it
/// over, as Kubernetes does.
pub fn validate_update(old: &AnyObject, new: &AnyObject) -> Vec<FieldError> {
    let mut errs = Errors(validate(new));
    if old.kind() != new.kind() {
        errs.invalid("kind".into(), new.kind(), IMMUTABLE);
        return errs.0;
    }
    let (old_meta, new_meta) = (old.metadata(), new.metadata());
    for (field, old_value, new_value) in [
        ("metadata.name", &old_meta.name, &new_meta.name),
        (
            "metadata.namespace",
            &old_meta.namespace,
            &new_meta.namespace,
        ),
        ("metadata.uid", &old_meta.uid, &new_meta.uid),
    ] {
        let old_value = old_value.as_deref().unwrap_or("");
        let new_value = new_value.as_deref().unwrap_or("");
        if !old_value.is_empty() && !new_value.is_empty() && old_value != new_value {
            errs.invalid(field.into(), new_value, IMMUTABLE);
        }
    }
    match (old, new) {
        (AnyObject::Pod(old), AnyObject::Pod(new)) => {
            validate_pod_spec_update(&old.spec, &new.spec, &mut errs)
        }
        (AnyObject::Deployment(old), AnyObject::Deployment(new)) => {
            validate_selector_update(&old.spec.selector, &new.spec.selector, &mut errs)
        }
        (AnyObject::ReplicaSet(old), AnyObject::ReplicaSet(new)) => {
            validate_selector_update(&old.spec.selector, &new.spec.selector, &mut errs)
        }
        (AnyObject::DaemonSet(old), AnyObject::DaemonSet(new)) => {
            validate_selector_update(&old.spec.selector, &new.spec.selector, &mut errs)
        }
        (AnyObject::ConfigMap(old), AnyObject::ConfigMap(new)) if old.immutable == Some(true) => {
            let locked = "field is immutable when `immutable` is set";
            if old.data != new.data {
                errs.forbidden("data".into(), locked);
            }
            if old.binary_data != new.binary_data {
                errs.forbidden("binaryData".into(), locked);
            }
            if new.immutable != Some(true) {
                errs.forbidden("immutable".into(), locked);
            }
        }
        (AnyObject::Secret(old), AnyObject::Secret(new)) => {
            if old.immutable == Some(true) {
                let locked = "field is immutable when `immutable` is set";
                if old.data != new.data || old.string_data != new.string_data {
                    errs.forbidden("data".into(), locked);
                }
                if new.immutable != Some(true) {
                    errs.forbidden("immutable".into(), locked);
                }
            }
            let secret_type = |s: &Secret| {
                s.type_
                    .clone()
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "Opaque".to_string())
            };
            if secret_type(old) != secret_type(new) {
                errs.invalid("type".into(), secret_type(new), IMMUTABLE);
            }
        }
        (AnyObject::Service(old), AnyObject::Service(new)) => {
            services::validate_service_update(&old.spec, &new.spec, &mut errs)
        }
        (AnyObject::EndpointSlice(old), AnyObject::EndpointSlice(new))
            if old.address_type != new.address_type =>
        {
            errs.invalid("addressType".into(), &new.address_type, IMMUTABLE);
        }
        (AnyObject::Job(old), AnyObject::Job(new)) => {
            if old.spec.template != new.spec.template {
                errs.invalid("spec.template".into(), "", IMMUTABLE);
            }
            if old.spec.completions != new.spec.completions {
                errs.invalid(
                    "spec.completions".into(),
                    new.spec.completions.unwrap_or(0),
                    IMMUTABLE,
                );
            }
            if old.spec.completion_mode != new.spec.completion_mode {
                errs.invalid(
                    "spec.completionMode".into(),
                    new.spec.completion_mode.clone().unwrap_or_default(),
                    IMMUTABLE,
                );
            }
        }
        (AnyObject::ControllerRevision(old), AnyObject::ControllerRevision(new))
            if old.data != new.data =>
        {
            errs.invalid("data".into(), "", IMMUTABLE);
        }
        (AnyObject::Node(old), AnyObject::Node(new)) => {
            let old_cidr = old.spec.pod_cidr.as_deref().unwrap_or("");
            let new_cidr = new.spec.pod_cidr.as_deref().unwrap_or("");
            if !old_cidr.is_empty() && old_cidr != new_cidr {
                errs.forbidden(
                    "spec.podCIDR".into(),
                    "node updates may not change podCIDR except from \"\" to valid",
                );
            }
        }
        _ => {}
    }
    errs.0
}

fn validate_selector_update(old: &LabelSelector, new: &LabelSelector, errs: &mut Errors) {
    if old != new {
        errs.invalid("spec.selector".into(), selector_string(new), IMMUTABLE);
    }
}

/// Kubernetes' message for a pod update that changes a fixed field.
const POD_UPDATE_MESSAGE: &str = "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.tolerations` (only additions to existing tolerations) and `spec.nodeName` (only to set it once)";

fn validate_pod_spec_update(old: &PodSpec, new: &PodSpec, errs: &mut Errors) {
    let mut allowed = new.clone();
    for (container, previous) in allowed.containers.iter_mut().zip(&old.containers) {
        container.image.clone_from(&previous.image);
    }
    for (container, previous) in allowed.init_containers.iter_mut().zip(&old.init_containers) {
        container.image.clone_from(&previous.image);
    }
    if old.tolerations.iter().all(|t| new.tolerations.contains(t)) {
        allowed.tolerations.clone_from(&old.tolerations);
    }
    if old.node_name.as_deref().unwrap_or("").is_empty() {
        allowed.node_name.clone_from(&old.node_name);
    }
    if allowed != *old {
        let mut changed = Vec::new();
        let old_value = serde_json::to_value(old).unwrap_or(Value::Null);
        let new_value = serde_json::to_value(&allowed).unwrap_or(Value::Null);
        diff_paths(&old_value, &new_value, "spec", 4, &mut changed);
        let detail = if changed.is_empty() {
            POD_UPDATE_MESSAGE.to_string()
        } else {
            format!("{POD_UPDATE_MESSAGE}; changed: {}", changed.join(", "))
        };
        errs.forbidden("spec".into(), detail);
    }
}

/// Paths where two JSON values differ, down to `depth` levels.
fn diff_paths(old: &Value, new: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if depth > 0 => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let null = Value::Null;
                let (x, y) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
                diff_paths(x, y, &child(path, k), depth - 1, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if depth > 0 && a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_paths(x, y, &index(path, i), depth - 1, out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(kind: Kind, value: Value) -> AnyObject {
        match AnyObject::from_value(kind, value) {
            Ok(obj) => obj,
            Err(err) => panic!("test object does not decode: {err}"),
        }
    }

    fn messages(kind: Kind, value: Value) -> Vec<String> {
        validate(&object(kind, value))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[track_caller]
    fn assert_lacks(errors: &[String], needle: &str) {
        assert!(
            !errors.iter().any(|e| e.contains(needle)),
            "unexpected {needle:?} in {errors:#?}"
        );
    }

    fn assert_has(errors: &[String], expected: &str) {
        assert!(
            errors.iter().any(|e| e == expected),
            "expected {expected:?} among:\n{}",
            errors.join("\n")
        );
    }

    #[track_caller]
    fn assert_has_prefix(errors: &[String], prefix: &str) {
        assert!(
            errors.iter().any(|e| e.starts_with(prefix)),
            "expected an error starting with {prefix:?} among:\n{}",
            errors.join("\n")
        );
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": spec})
    }

    fn pod_errors(spec: Value) -> Vec<String> {
        messages(Kind::Pod, pod(spec))
    }

    fn web_container() -> Value {
        json!({"name": "web", "image": "nginx:1.27"})
    }

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec})
    }

    fn workload_spec() -> Value {
        json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [web_container()]}
            }
        })
    }

    #[test]
    fn display_matches_kubernetes() {
        let cases = [
            (FieldError::required("spec.containers[1].image"), "spec.containers[1].image: Required value"),
            (
                FieldError::not_supported("spec.restartPolicy", "Sometimes", &["Always", "Never", "OnFailure"]),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"",
            ),
            (FieldError::duplicate("spec.containers[1].name", "web"), "spec.containers[1].name: Duplicate value: \"web\""),
            (FieldError::unsupported("spec.affinity"), "spec.affinity: field not supported by bramble"),
            (FieldError::forbidden("spec", "nope"), "spec: Forbidden: nope"),
            (FieldError::too_long("metadata.annotations", 262144), "metadata.annotations: Too long: may not be more than 262144 bytes"),
            (FieldError::invalid("spec.ports[0].port", 70000, "must be between 1 and 65535, inclusive"), "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"),
            (FieldError::type_error("spec.replicas", "\"string\": expected an integer"), "spec.replicas: Invalid value: \"string\": expected an integer"),
            (FieldError::invalid("", "x", ""), "Invalid value: \"x\""),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn reasons_and_causes() {
        assert_eq!(FieldError::required("a").reason(), "FieldValueRequired");
        assert_eq!(
            FieldError::invalid("a", "b", "c").reason(),
            "FieldValueInvalid"
        );
        assert_eq!(
            FieldError::not_supported("a", "b", &[]).reason(),
            "FieldValueNotSupported"
        );
        assert_eq!(
            FieldError::duplicate("a", "b").reason(),
            "FieldValueDuplicate"
        );
        assert_eq!(
            FieldError::forbidden("a", "b").reason(),
            "FieldValueForbidden"
        );
        assert_eq!(FieldError::too_long("a", 1).reason(), "FieldValueTooLong");
        assert_eq!(FieldError::unsupported("a").reason(), "FieldValueUnknown");
        assert_eq!(
            FieldError::type_error("a", "b").reason(),
            "FieldValueTypeInvalid"
        );
        let cause = FieldError::required("spec.containers").to_cause();
        assert_eq!(cause.reason, "FieldValueRequired");
        assert_eq!(cause.message, "Required value");
        assert_eq!(cause.field, "spec.containers");
    }

    #[test]
    fn a_valid_pod_has_no_errors() {
        let errors = pod_errors(json!({
            "containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                ],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "128Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "conf", "mountPath": "/etc/app", "readOnly": true}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                "readinessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 2},
                "securityContext": {"runAsUser": 1000, "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}
            }],
            "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
            "volumes": [
                {"name": "data", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "conf", "configMap": {"name": "app-config", "items": [{"key": "app.conf", "path": "app.conf"}]}},
                {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}}
            ],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "nodeSelector": {"kubernetes.io/arch": "arm64"},
            "tolerations": [
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "dedicated", "value": "edge", "effect": "NoSchedule"},
                {"operator": "Exists"}
            ],
            "terminationGracePeriodSeconds": 30
        }));
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn names_by_kind() {
        let errors = messages(
            Kind::Pod,
            json!({"metadata": {"name": "Web_1"}, "spec": {"containers": [web_container()]}}),
        );
        assert_eq!(errors, vec![
            "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
        ]);

        let errors = messages(
            Kind::Pod,
            json!({"metadata": {}, "spec": {"containers": [web_container()]}}),
        );
        assert_eq!(errors, vec!["metadata.name: Required value".to_string()]);
        let errors = messages(
            Kind::Pod,
            json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [web_container()]}}),
        );
        assert!(errors.is_empty(), "{errors:?}");

        // Namespaces are DNS-1123 labels: no dots.
        let errors = messages(Kind::Namespace, json!({"metadata": {"name": "team.a"}}));
        assert_has_prefix(
            &errors,
            "metadata.name: Invalid value: \"team.a\": a lowercase RFC 1123 label must consist of",
        );
        assert!(messages(Kind::Namespace, json!({"metadata": {"name": "team-a"}})).is_empty());
        // Services are DNS-1035 labels: must start with a letter.
        let service =
            |name: &str| json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}});
        assert_has_prefix(
            &messages(Kind::Service, service("1web")),
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of",
        );
        assert!(messages(Kind::Service, service("web-1")).is_empty());
        // Nodes and the rest are subdomains: dots allowed, 253 characters at most.
        assert!(messages(Kind::Node, json!({"metadata": {"name": "pi-1.lan"}})).is_empty());
        let long = "a".repeat(254);
        assert_has(
            &messages(Kind::Node, json!({"metadata": {"name": long}})),
            &format!(
                "metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
            ),
        );
        let label = "a".repeat(64);
        assert_has(
            &messages(Kind::Namespace, json!({"metadata": {"name": label}})),
            &format!(
                "metadata.name: Invalid value: \"{label}\": must be no more than 63 characters"
            ),
        );
        // Cluster-scoped kinds have no namespace.
        assert_has(
            &messages(
                Kind::Node,
                json!({"metadata": {"name": "pi", "namespace": "default"}}),
            ),
            "metadata.namespace: Forbidden: not allowed on this type",
        );
        assert_has_prefix(
            &messages(
                Kind::ConfigMap,
                json!({"metadata": {"name": "c", "namespace": "Bad"}}),
            ),
            "metadata.namespace: Invalid value: \"Bad\"",
        );
    }

    #[test]
    fn labels_and_annotations() {
        let errors = messages(
            Kind::ConfigMap,
            json!({"metadata": {
                "name": "c",
                "labels": {"app": "web", "example.com/tier": "front", "bad key": "x", "ok": "-bad-", "empty": "", "/x": "y", "a/b/c": "z"},
                "annotations": {"note": "anything at all: spaces, symbols!", "Bad_/Key": "v", "Upper/Case": "fine"}
            }}),
        );
        assert_has_prefix(&errors, "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters");
        assert_has_prefix(&errors, "metadata.labels: Invalid value: \"-bad-\": a valid label must be an empty string or consist of");
        assert_has(
            &errors,
            "metadata.labels: Invalid value: \"/x\": prefix part must be non-empty",
        );
        assert_has_prefix(
            &errors,
            "metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist of",
        );
        assert_has_prefix(&errors, "metadata.annotations: Invalid value: \"Bad_/Key\": prefix part a lowercase RFC 1123 subdomain");
        assert_eq!(errors.len(), 5, "{errors:#?}");

        let long_key = format!("example.com/{}", "k".repeat(64));
        let errors = messages(
            Kind::ConfigMap,
            json!({"metadata": {"name": "c", "labels": {long_key.clone(): "v"}}}),
        );
        assert_has(&errors, &format!("metadata.labels: Invalid value: \"{long_key}\": name part must be no more than 63 characters"));

        let big = "x".repeat(TOTAL_ANNOTATION_SIZE);
        let errors = messages(
            Kind::ConfigMap,
            json!({"metadata": {"name": "c", "annotations": {"big": big}}}),
        );
        assert_eq!(
            errors,
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes".to_string()]
        );
    }

    #[test]
    fn containers_are_required_and_named_uniquely() {
        assert_eq!(
            pod_errors(json!({})),
            vec!["spec.containers: Required value".to_string()]
        );
        let errors = pod_errors(json!({
            "initContainers": [{"name": "web", "image": "busybox"}],
            "containers": [{"name": "web", "image": "nginx"}, {"name": "Side_Car", "image": "x"}, {"image": "y"}, {"name": "web2", "image": " "}]
        }));
        assert_has(&errors, "spec.containers[0].name: Duplicate value: \"web\"");
        assert_has_prefix(
            &errors,
            "spec.containers[1].name: Invalid value: \"Side_Car\": a lowercase RFC 1123 label",
        );
        assert_has(&errors, "spec.containers[2].name: Required value");
        assert_has(&errors, "spec.containers[3].image: Required value");
        assert_eq!(errors.len(), 4, "{errors:#?}");
    }

    #[test]
    fn container_fields() {
        let errors = pod_errors(json!({"containers": [{
            "name": "web",
            "image": "nginx ",
            "imagePullPolicy": "Sometimes",
            "ports": [
                {"name": "http", "containerPort": 80},
                {"name": "http", "containerPort": 70000, "protocol": "ICMP"},
                {"name": "Web--Port", "containerPort": 0, "hostPort": 8080},
                {"name": "metrics-port-too-long", "containerPort": 9090, "hostPort": 8080},
                {"name": "123", "containerPort": 81}
            ]
        }]}));
        assert_has(&errors, "spec.containers[0].image: Invalid value: \"nginx \": must not have leading or trailing whitespace");
        assert_has(&errors, "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"");
        assert_has(
            &errors,
            "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
        );
        assert_has(&errors, "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive");
        assert_has(&errors, "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"");
        assert_has(&errors, "spec.containers[0].ports[2].name: Invalid value: \"Web--Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
        assert_has(&errors, "spec.containers[0].ports[2].name: Invalid value: \"Web--Port\": must not contain consecutive hyphens");
        assert_has(
            &errors,
            "spec.containers[0].ports[2].containerPort: Required value",
        );
        assert_has(&errors, "spec.containers[0].ports[3].name: Invalid value: \"metrics-port-too-long\": must be no more than 15 characters");
        assert_has(
            &errors,
            "spec.containers[0].ports[3].hostPort: Duplicate value: \"8080/TCP\"",
        );
        assert_has(&errors, "spec.containers[0].ports[4].name: Invalid value: 123: must contain at least one letter (a-z)");
    }

    #[test]
    fn host_network_ports_must_match() {
        let errors = pod_errors(
            json!({"hostNetwork": true, "containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        assert_has(&errors, "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true");
    }

    #[test]
    fn env_vars() {
        let errors = pod_errors(json!({"containers": [{"name": "web", "image": "x", "env": [
            {"value": "x"},
            {"name": "A=B", "value": "x"},
            {"name": "BOTH", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NONE", "valueFrom": {}},
            {"name": "TWO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}, "configMapKeyRef": {"name": "c", "key": "k"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "V2", "valueFrom": {"fieldRef": {"apiVersion": "v2", "fieldPath": "status.podIP"}}},
            {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['bad key']"}}},
            {"name": "CM", "valueFrom": {"configMapKeyRef": {"key": "bad/key"}}}
        ]}]}));
        let env = "spec.containers[0].env";
        assert_has(&errors, &format!("{env}[0].name: Required value"));
        assert_has(&errors, &format!("{env}[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"));
        assert_has(&errors, &format!("{env}[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"));
        assert_has(&errors, &format!("{env}[3].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
        assert_has(&errors, &format!("{env}[4].valueFrom: Invalid value: \"\": may not have more than one field specified at a time"));
        assert_has(&errors, &format!("{env}[5].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.serviceAccountName\": supported values: \"metadata.annotations['<KEY>']\", \"metadata.labels['<KEY>']\", \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"status.hostIP\", \"status.podIP\", \"status.podIPs\""));
        assert_has(&errors, &format!("{env}[6].valueFrom.fieldRef.apiVersion: Unsupported value: \"v2\": supported values: \"v1\""));
        assert_has_prefix(&errors, &format!("{env}[7].valueFrom.fieldRef.fieldPath: Invalid value: \"metadata.labels['bad key']\": name part must consist of"));
        assert_has(
            &errors,
            &format!("{env}[8].valueFrom.configMapKeyRef.name: Required value"),
        );
        assert_has_prefix(&errors, &format!("{env}[8].valueFrom.configMapKeyRef.key: Invalid value: \"bad/key\": a valid config key must consist of"));
        assert_eq!(errors.len(), 10, "{errors:#?}");
    }

    #[test]
    fn resources() {
        let errors = pod_errors(
            json!({"containers": [{"name": "web", "image": "x", "resources": {
                "requests": {"cpu": "2", "memory": "-1", "nvidia.com/gpu": 1, "ephemeral-storage": "1Gi"},
                "limits": {"cpu": "1", "memory": "lots", "ephemeral-storage": "2Gi"}
            }}]}),
        );
        let res = "spec.containers[0].resources";
        assert_has(&errors, &format!("{res}.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
        assert_has(
            &errors,
            &format!(
                "{res}.requests[memory]: Invalid value: -1: must be greater than or equal to 0"
            ),
        );
        assert_has(&errors, &format!("{res}.requests[nvidia.com/gpu]: Unsupported value: \"nvidia.com/gpu\": supported values: \"cpu\", \"ephemeral-storage\", \"memory\""));
        assert_has(&errors, &format!("{res}.requests[cpu]: Invalid value: 2: must be less than or equal to cpu limit of 1"));
        assert_eq!(errors.len(), 4, "{errors:#?}");
        // Equal request and limit, written differently, are fine.
        assert!(pod_errors(json!({"containers": [{"name": "web", "image": "x", "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1073741824"}}}]})).is_empty());
    }

    #[test]
    fn volumes_and_mounts() {
        let errors = pod_errors(json!({
            "volumes": [
                {"name": "data", "emptyDir": {"medium": "HugePages", "sizeLimit": "-1Gi"}},
                {"name": "data", "emptyDir": {}},
                {"name": "Bad_Name", "emptyDir": {}},
                {"name": "none"},
                {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}},
                {"name": "host", "hostPath": {"path": "relative/../x", "type": "Pipe"}},
                {"name": "cm", "configMap": {"items": [{"key": "k", "path": "/abs"}], "defaultMode": 1000}},
                {"name": "sec", "secret": {}}
            ],
            "containers": [{"name": "web", "image": "x", "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "missing", "mountPath": "/data"},
                {"name": "cm", "mountPath": "relative", "subPath": "../up"},
                {"mountPath": ""}
            ]}]
        }));
        assert_has(&errors, "spec.volumes[0].emptyDir.medium: Unsupported value: \"HugePages\": supported values: \"\", \"Memory\"");
        assert_has(&errors, "spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"-1Gi\": must be greater than or equal to 0");
        assert_has(&errors, "spec.volumes[1].name: Duplicate value: \"data\"");
        assert_has_prefix(
            &errors,
            "spec.volumes[2].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label",
        );
        assert_has(&errors, "spec.volumes[3]: Required value");
        assert_has(
            &errors,
            "spec.volumes[4].hostPath: Forbidden: may not specify more than 1 volume type",
        );
        assert_has(&errors, "spec.volumes[5].hostPath.path: Invalid value: \"relative/../x\": must be an absolute path");
        assert_has(&errors, "spec.volumes[5].hostPath.path: Invalid value: \"relative/../x\": must not contain '..'");
        assert_has_prefix(&errors, "spec.volumes[5].hostPath.type: Unsupported value: \"Pipe\": supported values: \"\", \"BlockDevice\"");
        assert_has(&errors, "spec.volumes[6].configMap.name: Required value");
        assert_has(&errors, "spec.volumes[6].configMap.items[0].path: Invalid value: \"/abs\": must be a relative path");
        assert_has(&errors, "spec.volumes[6].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive");
        assert_has(&errors, "spec.volumes[7].secret.secretName: Required value");
        let mounts = "spec.containers[0].volumeMounts";
        assert_has(&errors, &format!("{mounts}[1].name: Invalid value: \"missing\": must match the name of a volume of the pod (`volumes`)"));
        assert_has(
            &errors,
            &format!("{mounts}[1].mountPath: Invalid value: \"/data\": must be unique"),
        );
        assert_has(
            &errors,
            &format!(
                "{mounts}[2].mountPath: Invalid value: \"relative\": must be an absolute path"
            ),
        );
        assert_has(
            &errors,
            &format!("{mounts}[2].subPath: Invalid value: \"../up\": must not contain '..'"),
        );
        assert_has(&errors, &format!("{mounts}[3].name: Required value"));
        assert_has(&errors, &format!("{mounts}[3].mountPath: Required value"));
        assert_eq!(errors.len(), 19, "{errors:#?}");
    }

    #[test]
    fn probes() {
        let errors = pod_errors(json!({
            "initContainers": [{"name": "init", "image": "x", "readinessProbe": {"exec": {"command": ["true"]}}}],
            "containers": [{"name": "web", "image": "x",
                "livenessProbe": {"successThreshold": 2, "failureThreshold": 0, "initialDelaySeconds": -1},
                "readinessProbe": {"exec": {"command": []}, "tcpSocket": {"port": 0}, "periodSeconds": 0},
                "startupProbe": {"httpGet": {"port": "Http_Port", "scheme": "FTP", "httpHeaders": [{"name": "X Bad", "value": "1"}]}, "timeoutSeconds": -5}
            }]
        }));
        assert_has(
            &errors,
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers",
        );
        let c = "spec.containers[0]";
        assert_has(&errors, &format!("{c}.livenessProbe: Required value"));
        assert_has(
            &errors,
            &format!("{c}.livenessProbe.successThreshold: Invalid value: 2: must be 1"),
        );
        assert_has(&errors, &format!("{c}.livenessProbe.failureThreshold: Invalid value: 0: must be greater than or equal to 1"));
        assert_has(&errors, &format!("{c}.livenessProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0"));
        assert_has(
            &errors,
            &format!(
                "{c}.readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"
            ),
        );
        assert_has(
            &errors,
            &format!("{c}.readinessProbe.exec.command: Required value"),
        );
        assert_has(&errors, &format!("{c}.readinessProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive"));
        assert_has(&errors, &format!("{c}.readinessProbe.periodSeconds: Invalid value: 0: must be greater than or equal to 1"));
        assert_has(&errors, &format!("{c}.startupProbe.httpGet.port: Invalid value: \"Http_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"));
        assert_has(&errors, &format!("{c}.startupProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\""));
        assert_has_prefix(&errors, &format!("{c}.startupProbe.httpGet.httpHeaders[0].name: Invalid value: \"X Bad\": a valid HTTP header must consist of"));
        assert_has(&errors, &format!("{c}.startupProbe.timeoutSeconds: Invalid value: -5: must be greater than or equal to 1"));
        assert_eq!(errors.len(), 13, "{errors:#?}");
    }

    #[test]
    fn security_context() {
        let errors = pod_errors(
            json!({"containers": [{"name": "web", "image": "x", "securityContext": {
                "runAsUser": -1, "runAsGroup": 4294967296_i64,
                "capabilities": {"add": ["CAP_NET_ADMIN", "net_raw", "SYS_TIME"], "drop": ["ALL", ""]}
            }}]}),
        );
        let sc = "spec.containers[0].securityContext";
        assert_has(
            &errors,
            &format!(
                "{sc}.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive"
            ),
        );
        assert_has(&errors, &format!("{sc}.runAsGroup: Invalid value: 4294967296: must be between 0 and 2147483647, inclusive"));
        assert_has(&errors, &format!("{sc}.capabilities.add[0]: Invalid value: \"CAP_NET_ADMIN\": capability names are written without the `CAP_` prefix (e.g. 'NET_ADMIN')"));
        assert_has(&errors, &format!("{sc}.capabilities.add[1]: Invalid value: \"net_raw\": must consist of upper case letters and '_' (e.g. 'NET_ADMIN' or 'ALL')"));
        assert_has_prefix(
            &errors,
            &format!("{sc}.capabilities.drop[1]: Invalid value: \"\""),
        );
        assert_eq!(errors.len(), 5, "{errors:#?}");
    }

    #[test]
    fn pod_level_fields() {
        let errors = pod_errors(json!({
            "containers": [web_container()],
            "restartPolicy": "Sometimes",
            "dnsPolicy": "Google",
            "nodeName": "Pi_1",
            "hostname": "a.b",
            "terminationGracePeriodSeconds": -1,
            "nodeSelector": {"zone": "not valid"},
            "tolerations": [
                {"operator": "Equal", "value": "x"},
                {"key": "k", "operator": "Exists", "value": "v"},
                {"key": "k", "operator": "Maybe"},
                {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5},
                {"key": "k", "effect": "Never"}
            ]
        }));
        assert_has(&errors, "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"");
        assert_has(&errors, "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"");
        assert_has_prefix(
            &errors,
            "spec.nodeName: Invalid value: \"Pi_1\": a lowercase RFC 1123 subdomain",
        );
        assert_has_prefix(
            &errors,
            "spec.hostname: Invalid value: \"a.b\": a lowercase RFC 1123 label",
        );
        assert_has(&errors, "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0");
        assert_has_prefix(
            &errors,
            "spec.nodeSelector: Invalid value: \"not valid\": a valid label must be",
        );
        let t = "spec.tolerations";
        assert_has(&errors, &format!("{t}[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""));
        assert_has(&errors, &format!("{t}[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'"));
        assert_has(&errors, &format!("{t}[2].operator: Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\""));
        assert_has(&errors, &format!("{t}[3].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"));
        assert_has(&errors, &format!("{t}[4].effect: Unsupported value: \"Never\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\""));
        assert_eq!(errors.len(), 11, "{errors:#?}");
    }

    #[test]
    fn a_pod_with_many_problems_reports_them_all() {
        let errors = messages(
            Kind::Pod,
            json!({
                "metadata": {"name": "Bad_Pod", "labels": {"app": "-"}},
                "spec": {
                    "restartPolicy": "Sometimes",
                    "containers": [
                        {"name": "web", "image": "nginx", "ports": [{"containerPort": 0}]},
                        {"name": "web"},
                        {"name": "db", "image": "postgres", "env": [{"name": ""}], "volumeMounts": [{"name": "x", "mountPath": "/x"}]}
                    ]
                }
            }),
        );
        assert_eq!(errors, [
            "metadata.name: Invalid value: \"Bad_Pod\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            "metadata.labels: Invalid value: \"-\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[1].name: Duplicate value: \"web\"",
            "spec.containers[1].image: Required value",
            "spec.containers[2].env[0].name: Required value",
            "spec.containers[2].volumeMounts[0].name: Invalid value: \"x\": must match the name of a volume of the pod (`volumes`)",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"",
        ]);
    }

    #[test]
    fn a_valid_deployment_has_no_errors() {
        let mut spec = workload_spec();
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}});
        spec["minReadySeconds"] = json!(5);
        spec["progressDeadlineSeconds"] = json!(600);
        let errors = messages(Kind::Deployment, deployment(spec));
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn workload_selector_and_template() {
        let mut spec = workload_spec();
        spec["selector"] = json!({});
        let errors = messages(Kind::Deployment, deployment(spec));
        assert_eq!(errors, vec!["spec.selector: Required value".to_string()]);

        let mut spec = workload_spec();
        spec["selector"] = json!({"matchLabels": {"app": "api"}, "matchExpressions": [{"key": "tier", "operator": "In"}, {"key": "x", "operator": "Exists", "values": ["a"]}, {"key": "y", "operator": "Like", "values": ["a"]}]});
        spec["replicas"] = json!(-1);
        spec["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        let errors = messages(Kind::Deployment, deployment(spec));
        assert_has(
            &errors,
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        );
        assert_has(&errors, "spec.template.metadata.labels: Invalid value: \"app=web\": `selector` does not match template `labels`");
        assert_has(
            &errors,
            "spec.selector.matchExpressions[0].values: Required value",
        );
        assert_has(&errors, "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
        assert_has(&errors, "spec.selector.matchExpressions[2].operator: Unsupported value: \"Like\": supported values: \"DoesNotExist\", \"Exists\", \"In\", \"NotIn\"");
        assert_has(&errors, "spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"");
        assert_eq!(errors.len(), 6, "{errors:#?}");

        // The template's pod spec is validated at its own path.
        let mut spec = workload_spec();
        spec["template"]["spec"]["containers"][0]["image"] = json!("");
        let errors = messages(
            Kind::ReplicaSet,
            json!({"metadata": {"name": "web-1"}, "spec": spec}),
        );
        assert_eq!(
            errors,
            vec!["spec.template.spec.containers[0].image: Required value".to_string()]
        );
    }

    #[test]
    fn deployment_strategy() {
        let with_strategy = |strategy: Value| {
            let mut spec = workload_spec();
            spec["strategy"] = strategy;
            messages(Kind::Deployment, deployment(spec))
        };
        assert_eq!(with_strategy(json!({"type": "BlueGreen"})), vec!["spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\"".to_string()]);
        assert_eq!(with_strategy(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})), vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'".to_string()]);
        assert_eq!(with_strategy(json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})), vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0".to_string()]);
        let errors =
            with_strategy(json!({"rollingUpdate": {"maxSurge": -1, "maxUnavailable": "150%"}}));
        assert_has(&errors, "spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0");
        assert_has(&errors, "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%");
        let errors = with_strategy(json!({"rollingUpdate": {"maxSurge": "lots"}}));
        assert_eq!(errors, vec!["spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')".to_string()]);

        let mut spec = workload_spec();
        spec["minReadySeconds"] = json!(30);
        spec["progressDeadlineSeconds"] = json!(10);
        assert_eq!(messages(Kind::Deployment, deployment(spec)), vec!["spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds".to_string()]);
    }

    #[test]
    fn daemon_set_update_strategy() {
        let mut spec = workload_spec();
        spec.as_object_mut().map(|s| s.remove("replicas"));
        spec["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}});
        let errors = messages(
            Kind::DaemonSet,
            json!({"metadata": {"name": "agent"}, "spec": spec}),
        );
        assert_eq!(errors, vec!["spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0".to_string()]);
        spec["updateStrategy"] = json!({"type": "Everywhere"});
        let errors = messages(
            Kind::DaemonSet,
            json!({"metadata": {"name": "agent"}, "spec": spec}),
        );
        assert_eq!(errors, vec!["spec.updateStrategy.type: Unsupported value: \"Everywhere\": supported values: \"OnDelete\", \"RollingUpdate\"".to_string()]);
    }

    fn service(spec: Value) -> Vec<String> {
        messages(
            Kind::Service,
            json!({"metadata": {"name": "web"}, "spec": spec}),
        )
    }

    #[test]
    fn services() {
        assert!(service(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]})
        )
        .is_empty());
        assert!(
            service(json!({"clusterIP": "None", "selector": {"app": "web"}})).is_empty(),
            "headless services need no ports"
        );
        assert!(
            service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))
                .is_empty()
        );
        assert_eq!(
            service(json!({})),
            vec!["spec.ports: Required value".to_string()]
        );
        assert!(service(json!({"type": "LoadBalancer", "ports": [{"port": 80}]})).is_empty());
        assert_eq!(service(json!({"type": "Balanced", "ports": [{"port": 80}]})), vec!["spec.type: Unsupported value: \"Balanced\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_string()]);
        assert!(
            service(json!({"type": "ExternalName", "externalName": "db.example.com."})).is_empty()
        );
        assert_eq!(
            service(json!({"type": "ExternalName"})),
            vec!["spec.externalName: Required value".to_string()]
        );
        assert_has_prefix(
            &service(json!({"type": "ExternalName", "externalName": "not a name"})),
            "spec.externalName: Invalid value: \"not a name\": a lowercase RFC 1123 subdomain",
        );
        assert_has(
            &service(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}})),
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 90000: must be greater than 0 and less than 86400",
        );
        assert_has(
            &service(json!({"ports": [{"port": 80}], "externalTrafficPolicy": "Local"})),
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        );
        assert_has(
            &service(json!({"ports": [{"port": 80}], "ipFamilies": ["IPv6"]})),
            "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster (bramble is single-stack IPv4)",
        );

        let errors = service(json!({
            "clusterIP": "10.96.0.300",
            "sessionAffinity": "Sticky",
            "ports": [
                {"port": 80, "targetPort": 70000},
                {"name": "http", "port": 0, "protocol": "HTTP"},
                {"name": "http", "port": 443, "targetPort": "Bad_Name", "nodePort": 30443},
                {"name": "dup", "port": 443}
            ]
        }));
        assert_has(&errors, "spec.clusterIP: Invalid value: \"10.96.0.300\": must be a valid IPv4 address (e.g. 10.96.0.10), `None` for a headless service, or empty to allocate one");
        assert_has(&errors, "spec.ports[0].name: Required value");
        assert_has(&errors, "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive");
        assert_has(
            &errors,
            "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        );
        assert_has(&errors, "spec.ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"");
        assert_has(&errors, "spec.ports[2].name: Duplicate value: \"http\"");
        assert_has_prefix(
            &errors,
            "spec.ports[2].targetPort: Invalid value: \"Bad_Name\": must contain only",
        );
        assert_has(
            &errors,
            "spec.ports[2].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        );
        assert_has(&errors, "spec.ports[3]: Duplicate value: \"443/TCP\"");
        assert_has(&errors, "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"");
        assert_eq!(errors.len(), 10, "{errors:#?}");

        let errors = service(
            json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80, "nodePort": 8080}]}),
        );
        assert_has(&errors, "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort services");
        assert_eq!(
            errors.len(),
            1,
            "the NodePort range is the master's to check: {errors:#?}"
        );
    }

    #[test]
    fn config_maps() {
        let errors = messages(
            Kind::ConfigMap,
            json!({"metadata": {"name": "c"}, "data": {"app.conf": "x", "bad/key": "y", "..": "z", "both": "1"}, "binaryData": {"both": "AA==", "blob": "not base64!"}}),
        );
        assert_has_prefix(&errors, "data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
        assert_has(&errors, "data[..]: Invalid value: \"..\": must not be '..'");
        assert_has(
            &errors,
            "data[both]: Invalid value: \"both\": duplicate of key present in binaryData",
        );
        assert_has(&errors, "binaryData[blob]: Invalid value: \"<value omitted>\": must be base64 (standard alphabet, padded with '='): illegal base64 data at input byte 3");
        assert_eq!(errors.len(), 4, "{errors:#?}");
        let long_key = "k".repeat(254);
        assert_has(&messages(Kind::ConfigMap, json!({"metadata": {"name": "c"}, "data": {long_key.clone(): "v"}})), &format!("data[{long_key}]: Invalid value: \"{long_key}\": must be no more than 253 characters"));
        let big = "x".repeat(MAX_CONFIG_SIZE + 1);
        assert_eq!(
            messages(
                Kind::ConfigMap,
                json!({"metadata": {"name": "c"}, "data": {"big": big}})
            ),
            vec!["data: Too long: may not be more than 1048576 bytes".to_string()]
        );
    }

    #[test]
    fn secrets() {
        let ok = messages(
            Kind::Secret,
            json!({"metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg==", "wrapped": "aHVudGVy\nMg=="}, "stringData": {"user": "admin"}}),
        );
        assert!(ok.is_empty(), "{ok:#?}");
        let errors = messages(
            Kind::Secret,
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"password": "hunter2", "user": "YWRtaW4="}, "stringData": {"user": "root"}}),
        );
        assert_has(&errors, "data[password]: Invalid value: \"<value omitted>\": must be base64 (standard alphabet, padded with '='): illegal base64 data: the length must be a multiple of 4, padded with '='");
        // stringData wins over data for the same key, as in Kubernetes: no error.
        assert_lacks(&errors, "stringData[user]");
        assert_has(&errors, "data[tls.crt]: Required value");
        assert_has(&errors, "data[tls.key]: Required value");
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            !errors.iter().any(|e| e.contains("hunter2")),
            "secret values never appear in messages"
        );
    }

    #[test]
    fn nodes() {
        let errors = messages(
            Kind::Node,
            json!({"metadata": {"name": "pi-1"}, "spec": {
                "podCIDR": "10.244.1.0/33",
                "podCIDRs": ["10.244.1.0/24", "bogus"],
                "taints": [
                    {"key": "dedicated", "value": "edge", "effect": "NoSchedule"},
                    {"key": "dedicated", "value": "other", "effect": "NoSchedule"},
                    {"effect": "Sometimes"},
                    {"key": "bad key", "value": "ok"}
                ]
            }}),
        );
        assert_has(
            &errors,
            "spec.taints[1]: Duplicate value: \"dedicated:NoSchedule\"",
        );
        assert_has(&errors, "spec.taints[2].key: Required value");
        assert_has(&errors, "spec.taints[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\"");
        assert_has_prefix(
            &errors,
            "spec.taints[3].key: Invalid value: \"bad key\": name part must consist of",
        );
        assert_has(&errors, "spec.taints[3].effect: Required value");
        assert_has(&errors, "spec.podCIDR: Invalid value: \"10.244.1.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
        assert_has(&errors, "spec.podCIDRs[1]: Invalid value: \"bogus\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
        assert_has(
            &errors,
            "spec.podCIDRs[0]: Invalid value: \"10.244.1.0/24\": must match `podCIDR`",
        );
        assert_eq!(errors.len(), 8, "{errors:#?}");
        assert!(messages(Kind::Node, json!({"metadata": {"name": "pi-1"}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00::/64"]}})).is_empty());
    }

    #[test]
    fn events() {
        let errors = messages(
            Kind::Event,
            json!({"metadata": {"name": "web.17a", "namespace": "default"}, "involvedObject": {}, "count": -1}),
        );
        assert_eq!(
            errors,
            [
                "involvedObject.kind: Required value",
                "involvedObject.name: Required value",
                "count: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        assert!(messages(Kind::Event, json!({"metadata": {"name": "web.17a"}, "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Pulled"})).is_empty());
    }

    #[test]
    fn metadata_owner_references_and_finalizers() {
        let errors = messages(
            Kind::ConfigMap,
            json!({"metadata": {
                "name": "c",
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": true},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "", "uid": "2", "controller": true}
                ],
                "finalizers": ["kubernetes", "example.com/cleanup", "cleanup"]
            }}),
        );
        assert_eq!(errors, [
            "metadata.ownerReferences[1].name: Required value",
            "metadata.ownerReferences: Invalid value: 2: Only one reference can have Controller set to true",
            "metadata.finalizers[2]: Invalid value: \"cleanup\": name is neither a standard finalizer name nor is it fully qualified",
        ]);
    }

    fn update(kind: Kind, old: Value, new: Value) -> Vec<String> {
        validate_update(&object(kind, old), &object(kind, new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn pod_updates() {
        let old = pod(
            json!({"containers": [web_container()], "tolerations": [{"key": "a", "operator": "Exists"}]}),
        );
        // Images, added tolerations and a first nodeName are fine.
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        new["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]);
        new["spec"]["nodeName"] = json!("pi-1");
        assert!(update(Kind::Pod, old.clone(), new.clone()).is_empty());
        // Moving it to another node is not.
        let mut moved = new.clone();
        moved["spec"]["nodeName"] = json!("pi-2");
        let errors = update(Kind::Pod, new.clone(), moved);
        assert_eq!(
            errors,
            [format!(
                "spec: Forbidden: {POD_UPDATE_MESSAGE}; changed: spec.nodeName"
            )]
        );
        // Nor changing anything else, or removing a toleration.
        let mut changed = old.clone();
        changed["spec"]["restartPolicy"] = json!("Never");
        changed["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        changed["spec"]["tolerations"] = json!([]);
        let errors = update(Kind::Pod, old.clone(), changed);
        assert_eq!(errors, [format!("spec: Forbidden: {POD_UPDATE_MESSAGE}; changed: spec.containers[0].ports, spec.restartPolicy, spec.tolerations")]);
        // The new object is validated too, and names are immutable.
        let mut renamed = old.clone();
        renamed["metadata"]["name"] = json!("other");
        renamed["spec"]["containers"][0]["image"] = json!("");
        let errors = update(Kind::Pod, old, renamed);
        assert_eq!(
            errors,
            [
                "spec.containers[0].image: Required value",
                "metadata.name: Invalid value: \"other\": field is immutable",
            ]
        );
    }

    #[test]
    fn workload_selectors_are_immutable() {
        let old = deployment(workload_spec());
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        assert!(update(Kind::Deployment, old.clone(), new.clone()).is_empty());
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "front"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
        assert_eq!(
            update(Kind::Deployment, old, new),
            ["spec.selector: Invalid value: \"app=web,tier=front\": field is immutable"]
        );
        let rs = json!({"metadata": {"name": "rs"}, "spec": workload_spec()});
        let mut rs2 = rs.clone();
        rs2["spec"]["selector"]["matchExpressions"] = json!([{"key": "app", "operator": "Exists"}]);
        assert_eq!(
            update(Kind::ReplicaSet, rs, rs2),
            ["spec.selector: Invalid value: \"app=web,app\": field is immutable"]
        );
    }

    #[test]
    fn immutable_config() {
        let old = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true});
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"x": "y"});
        assert!(
            update(Kind::ConfigMap, old.clone(), new.clone()).is_empty(),
            "metadata may change"
        );
        new["data"]["a"] = json!("2");
        new["immutable"] = json!(false);
        assert_eq!(
            update(Kind::ConfigMap, old, new),
            [
                "data: Forbidden: field is immutable when `immutable` is set",
                "immutable: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        let mutable = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let mut changed = mutable.clone();
        changed["data"]["a"] = json!("2");
        assert!(update(Kind::ConfigMap, mutable, changed).is_empty());

        let old = json!({"metadata": {"name": "s"}, "data": {"a": "MQ=="}, "immutable": true});
        let mut new = old.clone();
        new["stringData"] = json!({"b": "2"});
        new["type"] = json!("kubernetes.io/basic-auth");
        assert_eq!(
            update(Kind::Secret, old, new),
            [
                "data: Forbidden: field is immutable when `immutable` is set",
                "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
            ]
        );
    }

    #[test]
    fn service_cluster_ip_is_immutable() {
        let old = json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}});
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.21");
        assert_eq!(
            update(Kind::Service, old.clone(), new),
            ["spec.clusterIP: Invalid value: \"10.96.0.21\": field is immutable"]
        );
        let mut omitted = old.clone();
        omitted["spec"]
            .as_object_mut()
            .map(|s| s.remove("clusterIP"));
        assert!(
            update(Kind::Service, old, omitted).is_empty(),
            "an omitted clusterIP keeps the old one"
        );
    }

    #[test]
    fn node_pod_cidr_is_set_once() {
        let old = json!({"metadata": {"name": "pi"}, "spec": {}});
        let mut new = old.clone();
        new["spec"]["podCIDR"] = json!("10.244.1.0/24");
        assert!(update(Kind::Node, old, new.clone()).is_empty());
        let mut moved = new.clone();
        moved["spec"]["podCIDR"] = json!("10.244.2.0/24");
        assert_eq!(update(Kind::Node, new, moved), ["spec.podCIDR: Forbidden: node updates may not change podCIDR except from \"\" to valid"]);
    }

    #[test]
    fn kinds_cannot_change() {
        let errors = validate_update(
            &object(Kind::ConfigMap, json!({"metadata": {"name": "a"}})),
            &object(Kind::Secret, json!({"metadata": {"name": "a"}})),
        );
        assert_eq!(errors, [FieldError::invalid("kind", "Secret", IMMUTABLE)]);
    }

    #[test]
    fn format_helpers() {
        assert!(is_dns1123_label("a").is_empty());
        assert!(!is_dns1123_label("").is_empty());
        assert!(!is_dns1123_label("-a").is_empty());
        assert!(is_dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!is_dns1123_subdomain("a..b").is_empty());
        assert!(!is_dns1035_label("1a").is_empty());
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert!(is_qualified_name("My_Key.1").is_empty());
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_port_name("http-2").is_empty());
        assert!(!is_valid_port_name("-http").is_empty());
        assert!(is_config_map_key(".env").is_empty());
        assert!(is_cidr("10.0.0.0/8") && is_cidr("fd00::/8"));
        assert!(!is_cidr("10.0.0.0") && !is_cidr("10.0.0.0/08") && !is_cidr("10.0.0.0/-1"));
        assert_eq!(name_errors(Kind::Service, "web"), Vec::<String>::new());
        assert_eq!(mask_trailing_dash("web-"), "weba");
    }
}

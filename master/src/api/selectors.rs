//! The `labelSelector` and `fieldSelector` query parameters of list and
//! watch requests, in Kubernetes' string grammar.
//!
//! - [`parse_label_selector`]: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//!   `a notin (x,y)`, `a`, `!a`, joined by commas (AND).
//! - [`parse_field_selector`]: `f=v`, `f==v`, `f!=v`, joined by commas (AND),
//!   over a small per-kind set of fields (see [`FieldSelector::validate_for`]).

use std::collections::BTreeMap;
use std::fmt;

use bramble_common::{meta, Kind};
use serde_json::Value;

/// Why a selector could not be parsed or is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector string does not follow the grammar.
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    /// A field selector names a field the kind cannot be selected by.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

fn parse_error(message: impl Into<String>) -> SelectorError {
    SelectorError::Parse(message.into())
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// The operator of a label [`Requirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of these values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of these values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

/// One requirement of a [`LabelSelector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the label is compared.
    pub operator: Operator,
    /// One value for `Equals`/`NotEquals`, the set for `In`/`NotIn`, none
    /// for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    /// True when `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let first = self.values.first().map(String::as_str).unwrap_or_default();
        match self.operator {
            Operator::Equals => write!(f, "{key}={first}"),
            Operator::NotEquals => write!(f, "{key}!={first}"),
            Operator::In => write!(f, "{key} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

/// A parsed label selector: the AND of its requirements. The empty selector
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the selector with no requirements (it matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Convert an API object's `matchLabels`/`matchExpressions` selector; see
    /// the free function [`from_api`].
    pub fn from_api(selector: &meta::LabelSelector) -> LabelSelector {
        from_api(selector)
    }
}

impl fmt::Display for LabelSelector {
    /// The selector in query-string form (`a=b,c in (d,e)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl From<&meta::LabelSelector> for LabelSelector {
    fn from(selector: &meta::LabelSelector) -> Self {
        from_api(selector)
    }
}

/// Convert an API object's selector (`matchLabels` then `matchExpressions`)
/// into a [`LabelSelector`]. An expression with an unknown operator becomes
/// a requirement that matches nothing (Kubernetes rejects such selectors at
/// validation time).
pub fn from_api(selector: &meta::LabelSelector) -> LabelSelector {
    let labels = selector
        .match_labels
        .iter()
        .map(|(key, value)| Requirement {
            key: key.clone(),
            operator: Operator::Equals,
            values: vec![value.clone()],
        });
    let expressions = selector.match_expressions.iter().map(|expression| {
        let (operator, values) = match expression.operator.as_str() {
            "In" => (Operator::In, expression.values.clone()),
            "NotIn" => (Operator::NotIn, expression.values.clone()),
            "Exists" => (Operator::Exists, Vec::new()),
            "DoesNotExist" => (Operator::DoesNotExist, Vec::new()),
            // `in ()` matches nothing.
            _ => (Operator::In, Vec::new()),
        };
        Requirement {
            key: expression.key.clone(),
            operator,
            values,
        }
    });
    LabelSelector {
        requirements: labels.chain(expressions).collect(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Open,
    Close,
    Comma,
    In,
    NotIn,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Token::Ident(s) => s.as_str(),
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::End => "",
        };
        write!(f, "'{text}'")
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::NotEquals
            }
            '!' => Token::Not,
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::DoubleEquals
            }
            '=' => Token::Equals,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            c if is_special(c) => Token::Ident(c.to_string()),
            c => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || is_special(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                }
            }
        };
        tokens.push(token);
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.position).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.position += 1;
        token
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, negated) = match self.next() {
            Token::Not => match self.next() {
                Token::Ident(key) => (key, true),
                other => {
                    return Err(parse_error(format!(
                        "found {other}, expected: identifier after '!'"
                    )))
                }
            },
            Token::Ident(key) => (key, false),
            other => {
                return Err(parse_error(format!(
                    "found {other}, expected: !, identifier"
                )))
            }
        };
        validate_label_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: Vec::new(),
            });
        }
        let (operator, values) = match self.peek() {
            Token::Comma | Token::End => (Operator::Exists, Vec::new()),
            Token::Equals | Token::DoubleEquals => {
                self.next();
                (Operator::Equals, vec![self.exact_value()?])
            }
            Token::NotEquals => {
                self.next();
                (Operator::NotEquals, vec![self.exact_value()?])
            }
            Token::In => {
                self.next();
                (Operator::In, self.value_set()?)
            }
            Token::NotIn => {
                self.next();
                (Operator::NotIn, self.value_set()?)
            }
            other => {
                return Err(parse_error(format!(
                    "found {other}, expected: '=', '!=', '==', 'in', 'notin'"
                )))
            }
        };
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// The value after `=`, `==` or `!=`; may be empty.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Token::Comma | Token::End => Ok(String::new()),
            _ => self.value(),
        }
    }

    /// One value; the keywords `in` and `notin` are plain words here.
    fn value(&mut self) -> Result<String, SelectorError> {
        let value = match self.next() {
            Token::Ident(value) => value,
            Token::In => "in".to_string(),
            Token::NotIn => "notin".to_string(),
            other => return Err(parse_error(format!("found {other}, expected: identifier"))),
        };
        validate_label_value(&value)?;
        Ok(value)
    }

    /// `(a, b, c)` after `in` or `notin`.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            other => return Err(parse_error(format!("found {other}, expected: '('"))),
        }
        if self.peek() == &Token::Close {
            return Err(parse_error(
                "for 'in', 'notin' operators, values set can't be empty",
            ));
        }
        let mut values = Vec::new();
        loop {
            let value = self.value()?;
            if !values.contains(&value) {
                values.push(value);
            }
            match self.next() {
                Token::Comma => continue,
                Token::Close => return Ok(values),
                other => return Err(parse_error(format!("found {other}, expected: ',' or ')'"))),
            }
        }
    }
}

fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    if valid {
        Ok(())
    } else {
        Err(parse_error(format!(
            "invalid label key {key:?}: must consist of alphanumeric characters, '-', '_', '.' or '/'"
        )))
    }
}

fn validate_label_value(value: &str) -> Result<(), SelectorError> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Ok(())
    } else {
        Err(parse_error(format!(
            "invalid label value {value:?}: must consist of alphanumeric characters, '-', '_' or '.'"
        )))
    }
}

/// Parse a `labelSelector` query string. The empty string (or only
/// whitespace) gives the empty selector, which matches everything.
pub fn parse_label_selector(s: &str) -> Result<LabelSelector, SelectorError> {
    let mut parser = Parser {
        tokens: lex(s),
        position: 0,
    };
    let mut requirements = Vec::new();
    if parser.peek() == &Token::End {
        return Ok(LabelSelector { requirements });
    }
    loop {
        requirements.push(parser.requirement()?);
        match parser.next() {
            Token::Comma => continue,
            Token::End => return Ok(LabelSelector { requirements }),
            other => {
                return Err(parse_error(format!(
                    "found {other}, expected: ',' or end of string"
                )))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// Fields every kind can be selected by.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The further fields each kind can be selected by, as Kubernetes allows.
const KIND_FIELDS: &[(Kind, &[&str])] = &[
    (
        Kind::Pod,
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    ),
    (
        Kind::Event,
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        ],
    ),
    (Kind::Secret, &["type"]),
    (Kind::Node, &["spec.unschedulable"]),
    (Kind::Namespace, &["status.phase"]),
];

/// Boolean fields: absent means `false`, as Kubernetes renders them.
const BOOLEAN_FIELDS: &[&str] = &["spec.unschedulable", "spec.hostNetwork"];

/// The operator of a [`FieldRequirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One requirement of a [`FieldSelector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// How the field is compared.
    pub operator: FieldOperator,
    /// The value compared against (unescaped); may be empty.
    pub value: String,
}

impl FieldRequirement {
    /// True when `object` satisfies this requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let actual = field_value(object, &self.field);
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A parsed field selector: the AND of its requirements. The empty selector
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// True when `object` satisfies every requirement. A missing field
    /// compares as the empty string (`spec.nodeName=` selects unbound pods),
    /// except boolean fields such as `spec.unschedulable`, which compare as
    /// `false`.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| r.matches(object))
    }

    /// True for the selector with no requirements (it matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The value `field` must equal, if the selector pins it with `=`
    /// (useful to narrow a scan, e.g. by `metadata.name`).
    pub fn exact_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Check that every field can be selected on for `kind`; the error
    /// names the first one that cannot (`field label not supported: spec.foo`).
    pub fn validate_for(&self, kind: Kind) -> Result<(), SelectorError> {
        match self
            .requirements
            .iter()
            .find(|r| !field_supported(kind, &r.field))
        {
            Some(r) => Err(SelectorError::UnsupportedField(r.field.clone())),
            None => Ok(()),
        }
    }
}

impl fmt::Display for FieldSelector {
    /// The selector in query-string form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// True when `kind` can be selected by `field`.
fn field_supported(kind: Kind, field: &str) -> bool {
    COMMON_FIELDS.contains(&field)
        || KIND_FIELDS
            .iter()
            .any(|(k, fields)| *k == kind && fields.contains(&field))
}

/// The value of a dotted field path in `object`, as a field selector
/// compares it.
fn field_value(object: &Value, field: &str) -> String {
    let found = field
        .split('.')
        .try_fold(object, |value, part| value.get(part));
    match found {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if BOOLEAN_FIELDS.contains(&field) => "false".to_string(),
        _ => String::new(),
    }
}

/// Parse a `fieldSelector` query string: `field=value`, `field==value` or
/// `field!=value` terms joined by commas. In values, `\,`, `\=` and `\\`
/// stand for `,`, `=` and `\`. The empty string gives the empty selector.
pub fn parse_field_selector(s: &str) -> Result<FieldSelector, SelectorError> {
    let mut requirements = Vec::new();
    for term in split_unescaped_commas(s) {
        if term.trim().is_empty() {
            continue;
        }
        requirements.push(parse_field_term(term)?);
    }
    Ok(FieldSelector { requirements })
}

fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

fn parse_field_term(term: &str) -> Result<FieldRequirement, SelectorError> {
    let mut escaped = false;
    let mut split = None;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        let rest = &term[i..];
        if c == '\\' {
            escaped = true;
        } else if rest.starts_with("!=") {
            split = Some((i, FieldOperator::NotEquals, 2));
            break;
        } else if rest.starts_with("==") {
            split = Some((i, FieldOperator::Equals, 2));
            break;
        } else if c == '=' {
            split = Some((i, FieldOperator::Equals, 1));
            break;
        }
    }
    let Some((at, operator, len)) = split else {
        return Err(parse_error(format!(
            "{:?}: expected field=value, field==value or field!=value",
            term.trim()
        )));
    };
    let field = term[..at].trim();
    let valid_field = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    if !valid_field {
        return Err(parse_error(format!(
            "{:?}: invalid field name {field:?}",
            term.trim()
        )));
    }
    let value = unescape_field_value(term[at + len..].trim())?;
    Ok(FieldRequirement {
        field: field.to_string(),
        operator,
        value,
    })
}

fn unescape_field_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('\\' | ',' | '=')) => out.push(e),
            Some(e) => {
                return Err(parse_error(format!(
                    "invalid escape sequence \"\\{e}\" in field selector value {raw:?}"
                )))
            }
            None => {
                return Err(parse_error(format!(
                    "unterminated escape sequence in field selector value {raw:?}"
                )))
            }
        }
    }
    Ok(out)
}

fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        parse_label_selector(s).expect("selector parses")
    }

    fn label_err(s: &str) -> String {
        parse_label_selector(s)
            .expect_err("selector fails")
            .to_string()
    }

    #[test]
    fn empty_label_selector_matches_everything() {
        for s in ["", "   "] {
            let selector = sel(s);
            assert!(selector.is_empty());
            assert!(selector.matches(&labels(&[])));
            assert!(selector.matches(&labels(&[("a", "b")])));
        }
        assert!(!sel("a").is_empty());
    }

    #[test]
    fn equality_operators() {
        let web = labels(&[("app", "web")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        for s in ["app=web", "app==web", " app = web "] {
            assert!(sel(s).matches(&web), "{s}");
            assert!(!sel(s).matches(&db), "{s}");
            assert!(!sel(s).matches(&none), "{s}");
        }
        let ne = sel("app!=web");
        assert!(!ne.matches(&web));
        assert!(ne.matches(&db));
        assert!(ne.matches(&none), "!= matches an absent label");
        // An empty value is allowed and means the empty string.
        assert!(sel("app=").matches(&labels(&[("app", "")])));
        assert!(!sel("app=").matches(&none));
        assert_eq!(sel("a=").requirements()[0].values, [""]);
    }

    #[test]
    fn set_operators() {
        let s = sel("env in (prod, staging)");
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "staging")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[])));
        let s = sel("env notin (prod,staging)");
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(s.matches(&labels(&[])), "notin matches an absent label");
        // Keywords are plain values inside the set.
        assert_eq!(
            sel("x in (in,notin)").requirements()[0].values,
            ["in", "notin"]
        );
        assert_eq!(sel("x in (a,a,b)").requirements()[0].values, ["a", "b"]);
    }

    #[test]
    fn existence_operators() {
        let has = labels(&[("gpu", "")]);
        let hasnt = labels(&[("cpu", "arm")]);
        assert!(sel("gpu").matches(&has));
        assert!(!sel("gpu").matches(&hasnt));
        assert!(!sel("!gpu").matches(&has));
        assert!(sel("! gpu").matches(&hasnt));
    }

    #[test]
    fn requirements_are_anded() {
        let s = sel("app=web, tier in (front,edge),!canary,  region, version!=v1");
        assert_eq!(s.requirements().len(), 5);
        assert!(s.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("region", "eu")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("region", "eu"),
            ("canary", "true")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("region", "eu"),
            ("version", "v1")
        ])));
        assert_eq!(
            s.to_string(),
            "app=web,tier in (front,edge),!canary,region,version!=v1"
        );
    }

    #[test]
    fn prefixed_keys() {
        let s = sel("app.kubernetes.io/name=web,example.com/team_x-1.a");
        assert!(s.matches(&labels(&[
            ("app.kubernetes.io/name", "web"),
            ("example.com/team_x-1.a", "z")
        ])));
    }

    #[test]
    fn label_selector_errors() {
        assert_eq!(
            label_err("a=b,"),
            "unable to parse requirement: found '', expected: !, identifier"
        );
        assert_eq!(
            label_err(",a"),
            "unable to parse requirement: found ',', expected: !, identifier"
        );
        assert_eq!(
            label_err("a in ()"),
            "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            label_err("a in x"),
            "unable to parse requirement: found 'x', expected: '('"
        );
        assert_eq!(
            label_err("a in (x"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            label_err("a in (x,)"),
            "unable to parse requirement: found ')', expected: identifier"
        );
        assert_eq!(
            label_err("a b"),
            "unable to parse requirement: found 'b', expected: '=', '!=', '==', 'in', 'notin'"
        );
        assert_eq!(
            label_err("a>1"),
            "unable to parse requirement: found '>', expected: '=', '!=', '==', 'in', 'notin'"
        );
        assert_eq!(
            label_err("a=b c"),
            "unable to parse requirement: found 'c', expected: ',' or end of string"
        );
        assert_eq!(
            label_err("!"),
            "unable to parse requirement: found '', expected: identifier after '!'"
        );
        assert_eq!(
            label_err("=b"),
            "unable to parse requirement: found '=', expected: !, identifier"
        );
        assert!(label_err("a$b=c").contains("invalid label key \"a$b\""));
        assert!(label_err("a=b$").contains("invalid label value \"b$\""));
        assert!(label_err("in=b").contains("found 'in'"));
    }

    #[test]
    fn from_api_selectors() {
        let api = meta::LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                meta::LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: vec!["front".into(), "edge".into()],
                },
                meta::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: vec!["dev".into()],
                },
                meta::LabelSelectorRequirement {
                    key: "gpu".into(),
                    operator: "Exists".into(),
                    values: vec![],
                },
                meta::LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        let s = from_api(&api);
        assert_eq!(s, LabelSelector::from_api(&api));
        assert_eq!(s, LabelSelector::from(&api));
        assert_eq!(
            s.to_string(),
            "app=web,tier in (front,edge),env notin (dev),gpu,!canary"
        );
        let good = labels(&[("app", "web"), ("tier", "edge"), ("gpu", "1")]);
        assert!(s.matches(&good));
        assert_eq!(s.matches(&good), api.matches(&good));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(from_api(&meta::LabelSelector::default()).is_empty());

        let bogus = meta::LabelSelector {
            match_expressions: vec![meta::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Sometimes".into(),
                values: vec!["b".into()],
            }],
            ..Default::default()
        };
        assert!(!from_api(&bogus).matches(&labels(&[("a", "b")])));
        assert!(!from_api(&bogus).matches(&labels(&[])));
    }

    // --- field selectors ----------------------------------------------------

    fn fsel(s: &str) -> FieldSelector {
        parse_field_selector(s).expect("field selector parses")
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Value {
        let mut pod = json!({
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"restartPolicy": "Always", "schedulerName": "default-scheduler"},
            "status": {"phase": phase, "podIP": "10.42.0.7"}
        });
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        pod
    }

    #[test]
    fn field_equality_operators() {
        let bound = pod("a", Some("pi-1"), "Running");
        let other = pod("b", Some("pi-2"), "Pending");
        for s in [
            "spec.nodeName=pi-1",
            "spec.nodeName==pi-1",
            " spec.nodeName = pi-1 ",
        ] {
            assert!(fsel(s).matches(&bound), "{s}");
            assert!(!fsel(s).matches(&other), "{s}");
        }
        let ne = fsel("spec.nodeName!=pi-1");
        assert!(!ne.matches(&bound));
        assert!(ne.matches(&other));
        let both = fsel("metadata.name=a,status.phase!=Pending,metadata.namespace=default");
        assert!(both.matches(&bound));
        assert!(!both.matches(&other));
        assert_eq!(both.exact_value("metadata.name"), Some("a"));
        assert_eq!(both.exact_value("status.phase"), None);
        assert_eq!(
            both.to_string(),
            "metadata.name=a,status.phase!=Pending,metadata.namespace=default"
        );
    }

    #[test]
    fn missing_fields_compare_as_empty() {
        let unbound = pod("u", None, "Pending");
        let bound = pod("b", Some("pi-1"), "Running");
        let s = fsel("spec.nodeName=");
        assert!(s.matches(&unbound));
        assert!(!s.matches(&bound));
        assert!(fsel("spec.nodeName!=").matches(&bound));
        assert!(!fsel("spec.nodeName!=").matches(&unbound));
        // The scheduler's query.
        assert!(
            fsel("spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed").matches(&unbound)
        );
    }

    #[test]
    fn boolean_fields() {
        let cordoned = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        let plain = json!({"metadata": {"name": "n2"}, "spec": {}});
        assert!(fsel("spec.unschedulable=true").matches(&cordoned));
        assert!(!fsel("spec.unschedulable=true").matches(&plain));
        assert!(fsel("spec.unschedulable=false").matches(&plain));
        assert!(fsel("spec.unschedulable!=true").matches(&plain));
    }

    #[test]
    fn event_and_secret_fields() {
        let event = json!({
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u-1"},
            "reason": "Scheduled",
            "type": "Normal"
        });
        let s = fsel("involvedObject.kind=Pod,involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=u-1");
        assert!(s.validate_for(Kind::Event).is_ok());
        assert!(s.matches(&event));
        assert!(fsel("reason=Scheduled,type!=Warning").matches(&event));
        assert!(!fsel("involvedObject.uid=u-2").matches(&event));
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
        let s = fsel("type=kubernetes.io/tls");
        assert!(s.validate_for(Kind::Secret).is_ok());
        assert!(s.matches(&secret));
    }

    #[test]
    fn validate_for_kinds() {
        for kind in Kind::all() {
            assert!(fsel("metadata.name=x,metadata.namespace=y")
                .validate_for(*kind)
                .is_ok());
        }
        for field in [
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "status.podIP",
        ] {
            assert!(
                fsel(&format!("{field}=x")).validate_for(Kind::Pod).is_ok(),
                "{field}"
            );
        }
        assert!(fsel("spec.unschedulable=true")
            .validate_for(Kind::Node)
            .is_ok());
        let err = fsel("metadata.name=a,spec.foo=b")
            .validate_for(Kind::Pod)
            .expect_err("unsupported");
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
        assert_eq!(err, SelectorError::UnsupportedField("spec.foo".into()));
        assert!(fsel("spec.nodeName=x")
            .validate_for(Kind::Deployment)
            .is_err());
        assert!(fsel("type=x").validate_for(Kind::ConfigMap).is_err());
        assert!(fsel("reason=x").validate_for(Kind::Pod).is_err());
        assert!(fsel("").validate_for(Kind::Pod).is_ok());
    }

    #[test]
    fn empty_field_selector() {
        for s in ["", " ", ",", "a=b,"] {
            let selector = fsel(s);
            assert!(selector.matches(&json!({"a": "b"})), "{s:?}");
        }
        assert!(fsel("").is_empty());
        assert!(!fsel("a=b").is_empty());
    }

    #[test]
    fn field_value_escapes() {
        let s = fsel(r"metadata.name=a\,b\=c\\d,reason=x");
        assert_eq!(s.requirements().len(), 2);
        assert_eq!(s.requirements()[0].value, r"a,b=c\d");
        assert!(s.matches(&json!({"metadata": {"name": r"a,b=c\d"}, "reason": "x"})));
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d,reason=x");
        // An escaped '=' in the field name side is not the operator.
        assert!(parse_field_selector(r"a\=b").is_err());
    }

    #[test]
    fn field_selector_errors() {
        let err = |s: &str| parse_field_selector(s).expect_err("fails").to_string();
        assert_eq!(
            err("metadata.name"),
            "unable to parse requirement: \"metadata.name\": expected field=value, field==value or field!=value"
        );
        assert_eq!(
            err("=x"),
            "unable to parse requirement: \"=x\": invalid field name \"\""
        );
        assert!(err("a b=c").contains("invalid field name \"a b\""));
        assert!(err(r"a=b\x").contains("invalid escape sequence \"\\x\""));
        assert!(err("a=b\\").contains("unterminated escape sequence"));
        assert!(err("status.phase in (Running)").contains("expected field=value"));
        assert!(err("!spec.nodeName").contains("expected field=value"));
    }
}

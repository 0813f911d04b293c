//! Resource quantities (`250m`, `1.5`, `64Mi`, `1G`, `1e3`), parsed exactly.
//!
//! A [`Quantity`] keeps the text the user wrote, so objects round-trip
//! unchanged; [`Quantity::parse`] turns it into a [`ParsedQuantity`], an exact
//! integer count of nano-units (`i128`, so `1Ei` = 2^60 and far beyond fit).
//!
//! The grammar is Kubernetes' (`resource.ParseQuantity`), whose error message
//! quotes the regular expression `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`:
//!
//! - an optional sign, then digits with an optional fraction: `1`, `1.5`,
//!   `.5` and `1.` are all accepted, as in Kubernetes. At least one digit is
//!   required: Kubernetes' parser reads a lone `.`, `-` or even `Mi` as zero,
//!   bramble rejects them;
//! - then one suffix: binary `Ki Mi Gi Ti Pi Ei`, decimal SI `n u m "" k M G T
//!   P E`, or a decimal exponent `e3`, `E-2`, `e+6`.
//!
//! Choices where Kubernetes leaves room: surrounding whitespace is trimmed (as
//! Kubernetes does when reading JSON); any precision finer than one nano-unit
//! is rounded up (away from zero), as Kubernetes does, so `0.1n` is `1n`;
//! magnitudes beyond `i128` nano-units (about 1.7e29 units) are rejected as
//! too large instead of being capped.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Kubernetes' own message for a quantity that does not follow the grammar.
const FORMAT_MESSAGE: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Nano-units per unit.
const NANO: i128 = 1_000_000_000;

/// A resource quantity as written by the user. The original text is kept so
/// that objects round-trip unchanged.
///
/// It serializes as a JSON string and deserializes from a string or a JSON
/// number (`cpu: 1`, `cpu: 0.5` in YAML), keeping the number's text. A
/// malformed string still deserializes: validation reports it by field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

/// Why a quantity's text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the grammar (Kubernetes' own message).
    #[error("{FORMAT_MESSAGE}")]
    Format,
    /// The text is empty.
    #[error("quantity is empty: {FORMAT_MESSAGE}")]
    Empty,
    /// The suffix is none of the known ones.
    #[error(
        "unable to parse quantity's suffix {suffix:?}: use one of Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent such as e3"
    )]
    Suffix {
        /// The suffix as written.
        suffix: String,
    },
    /// The value does not fit in an `i128` count of nano-units.
    #[error("quantity is too large: at most about 1.7e29 units are supported")]
    Overflow,
}

/// How a quantity was written, which decides its canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// Binary suffixes: `Ki`, `Mi`, `Gi`, ...
    BinarySI,
    /// Decimal SI suffixes (or none): `m`, `k`, `M`, ...
    DecimalSI,
    /// A decimal exponent: `1e3`.
    DecimalExponent,
}

/// A quantity parsed into an exact integer count of nano-units.
///
/// Equality and ordering compare amounts only (`1Ki` equals `1024`).
#[derive(Debug, Clone, Copy)]
pub struct ParsedQuantity {
    nanos: i128,
    format: QuantityFormat,
}

impl PartialEq for ParsedQuantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for ParsedQuantity {}

impl PartialOrd for ParsedQuantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParsedQuantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

/// Divide by `divisor` (> 0), rounding the magnitude up (away from zero).
fn div_away_from_zero(value: i128, divisor: i128) -> i128 {
    let quotient = value / divisor;
    if value % divisor == 0 {
        quotient
    } else if value < 0 {
        quotient - 1
    } else {
        quotient + 1
    }
}

impl ParsedQuantity {
    /// A quantity of exactly `nanos` nano-units (decimal format).
    pub fn from_nanos(nanos: i128) -> Self {
        ParsedQuantity {
            nanos,
            format: QuantityFormat::DecimalSI,
        }
    }

    /// The exact amount in nano-units (`1` is `1_000_000_000`).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The amount in milli-units, rounded up away from zero like Kubernetes'
    /// `MilliValue`: `250m` is 250, `1.5` is 1500, `0.1m` is 1.
    pub fn milli_value(&self) -> i128 {
        div_away_from_zero(self.nanos, 1_000_000)
    }

    /// The amount in whole units, rounded up away from zero like Kubernetes'
    /// `Value`: `64Mi` is 67108864, `1.5` is 2, `100m` is 1.
    pub fn value(&self) -> i128 {
        div_away_from_zero(self.nanos, NANO)
    }

    /// True for amounts below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// True for a zero amount.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// How the quantity was written.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// Canonical text for this amount: whole units as [`Quantity::from_units`]
    /// writes them, anything finer in milli-units, and below a milli-unit in
    /// nano-units.
    pub fn to_quantity(&self) -> Quantity {
        if self.nanos % NANO == 0 {
            Quantity::from_units(self.nanos / NANO)
        } else if self.nanos % 1_000_000 == 0 {
            Quantity(format!("{}m", self.nanos / 1_000_000))
        } else {
            Quantity(format!("{}n", self.nanos))
        }
    }
}

impl FromStr for ParsedQuantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

impl fmt::Display for ParsedQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_quantity().0)
    }
}

const BINARY_SUFFIXES: [(&str, i128); 6] = [
    ("Ei", 1 << 60),
    ("Pi", 1 << 50),
    ("Ti", 1 << 40),
    ("Gi", 1 << 30),
    ("Mi", 1 << 20),
    ("Ki", 1 << 10),
];

impl Quantity {
    /// Wrap `text` as written, without checking it (see [`Quantity::parse`];
    /// `text.parse::<Quantity>()` checks).
    pub fn new(text: impl Into<String>) -> Self {
        Quantity(text.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parse the text exactly.
    pub fn parse(&self) -> Result<ParsedQuantity, QuantityError> {
        parse(&self.0)
    }

    /// Canonical text for `milli` milli-units: `1500` gives `1500m`, `2000`
    /// gives `2`.
    pub fn from_milli(milli: i128) -> Self {
        if milli % 1000 == 0 {
            Quantity((milli / 1000).to_string())
        } else {
            Quantity(format!("{milli}m"))
        }
    }

    /// Canonical text for `units` whole units: the largest binary suffix that
    /// divides it exactly (`67108864` gives `64Mi`), else the plain integer
    /// (`1000` gives `1000`).
    pub fn from_units(units: i128) -> Self {
        if units != 0 {
            for (suffix, factor) in BINARY_SUFFIXES {
                if units % factor == 0 {
                    return Quantity(format!("{}{suffix}", units / factor));
                }
            }
        }
        Quantity(units.to_string())
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    /// Check `text` and keep it as written.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)?;
        Ok(Quantity(text.to_string()))
    }
}

impl From<ParsedQuantity> for Quantity {
    fn from(parsed: ParsedQuantity) -> Self {
        parsed.to_quantity()
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;

        impl serde::de::Visitor<'_> for QuantityVisitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity (a string such as \"250m\" or \"64Mi\", or a number)")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Quantity, E> {
                Ok(Quantity(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }

            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }

            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                // Rust prints floats without an exponent (`1e21` as
                // `1000000000000000000000`), which the grammar accepts.
                Ok(Quantity(v.to_string()))
            }
        }

        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// The parts of a quantity's text, as Kubernetes' `parseQuantityString` splits it.
struct Parts<'a> {
    negative: bool,
    /// Integer digits, leading zeros stripped.
    whole: &'a str,
    /// Fraction digits.
    fraction: &'a str,
    suffix: &'a str,
}

fn split(text: &str) -> Result<Parts<'_>, QuantityError> {
    let bytes = text.as_bytes();
    let end = bytes.len();
    let mut pos = 0;
    let mut negative = false;
    match bytes.first() {
        Some(b'-') => {
            negative = true;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    let sign_end = pos;
    while pos < end && bytes[pos] == b'0' {
        pos += 1;
    }
    let whole_start = pos;
    while pos < end && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let whole = &text[whole_start..pos];
    let mut any_digit = pos > sign_end;
    let mut fraction = "";
    if pos < end && bytes[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < end && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        fraction = &text[start..pos];
        any_digit |= !fraction.is_empty();
    }
    if !any_digit {
        return Err(QuantityError::Format);
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&bytes[pos]) {
        pos += 1;
    }
    if pos < end && (bytes[pos] == b'-' || bytes[pos] == b'+') {
        pos += 1;
    }
    while pos < end && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos != end {
        return Err(QuantityError::Format);
    }
    Ok(Parts {
        negative,
        whole,
        fraction,
        suffix: &text[suffix_start..],
    })
}

/// The multiplier a suffix stands for: `2^binary × 10^decimal`.
fn interpret_suffix(suffix: &str) -> Option<(u32, i64, QuantityFormat)> {
    let decimal = |exp| Some((0, exp, QuantityFormat::DecimalSI));
    let binary = |exp| Some((exp, 0, QuantityFormat::BinarySI));
    match suffix {
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let digits = exponent
                .strip_prefix('+')
                .or_else(|| exponent.strip_prefix('-'))
                .unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Exponents this large are out of range either way; saturate
            // instead of failing so that the result is "too large" or zero.
            let value = exponent
                .parse::<i64>()
                .unwrap_or(if exponent.starts_with('-') {
                    i64::MIN / 2
                } else {
                    i64::MAX / 2
                });
            Some((0, value, QuantityFormat::DecimalExponent))
        }
    }
}

/// Multiply a big-endian decimal digit string by 2 in place.
fn double(digits: &mut Vec<u8>) {
    let mut carry = 0;
    for digit in digits.iter_mut().rev() {
        let doubled = *digit * 2 + carry;
        *digit = doubled % 10;
        carry = doubled / 10;
    }
    if carry > 0 {
        digits.insert(0, carry);
    }
}

/// Parse `text` into an exact count of nano-units.
fn parse(text: &str) -> Result<ParsedQuantity, QuantityError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let parts = split(text)?;
    let (binary_exp, decimal_exp, format) =
        interpret_suffix(parts.suffix).ok_or_else(|| QuantityError::Suffix {
            suffix: parts.suffix.to_string(),
        })?;

    // value = 0.DIGITS × 10^len(whole) × 2^binary_exp × 10^decimal_exp;
    // nanos = DIGITS × 2^binary_exp × 10^shift, rounded up.
    let mut digits: Vec<u8> = parts
        .whole
        .bytes()
        .chain(parts.fraction.bytes())
        .map(|b| b - b'0')
        .collect();
    for _ in 0..binary_exp {
        double(&mut digits);
    }
    let shift = 9i128 + i128::from(decimal_exp) - parts.fraction.len() as i128;

    let first_nonzero = digits.iter().position(|&d| d != 0);
    let Some(first_nonzero) = first_nonzero else {
        return Ok(ParsedQuantity { nanos: 0, format });
    };
    let digits = &digits[first_nonzero..];

    let (kept, round_up) = if shift >= 0 {
        // i128::MAX has 39 digits: anything longer cannot fit.
        if digits.len() as i128 + shift > 39 {
            return Err(QuantityError::Overflow);
        }
        (digits, false)
    } else {
        let dropped = usize::try_from(-shift).unwrap_or(usize::MAX);
        if dropped >= digits.len() {
            (&digits[..0], true)
        } else {
            let (kept, rest) = digits.split_at(digits.len() - dropped);
            (kept, rest.iter().any(|&d| d != 0))
        }
    };
    let mut magnitude: i128 = 0;
    for &digit in kept {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(digit)))
            .ok_or(QuantityError::Overflow)?;
    }
    if shift > 0 {
        let factor = 10i128
            .checked_pow(u32::try_from(shift).map_err(|_| QuantityError::Overflow)?)
            .ok_or(QuantityError::Overflow)?;
        magnitude = magnitude
            .checked_mul(factor)
            .ok_or(QuantityError::Overflow)?;
    }
    if round_up {
        magnitude = magnitude.checked_add(1).ok_or(QuantityError::Overflow)?;
    }
    let nanos = if parts.negative {
        -magnitude
    } else {
        magnitude
    };
    Ok(ParsedQuantity { nanos, format })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> ParsedQuantity {
        match Quantity::new(text).parse() {
            Ok(parsed) => parsed,
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    fn err(text: &str) -> QuantityError {
        match Quantity::new(text).parse() {
            Ok(parsed) => panic!("{text:?} should not parse, got {parsed:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn the_usual_examples() {
        assert_eq!(q("250m").milli_value(), 250);
        assert_eq!(q("250m").value(), 1);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("64Mi").value(), 67_108_864);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("0.5Gi").value(), 536_870_912);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("0.1m").milli_value(), 1);
        assert_eq!(q("2").milli_value(), 2000);
    }

    #[test]
    fn every_suffix() {
        let cases: [(&str, i128); 22] = [
            ("1n", 1),
            ("1u", 1_000),
            ("1m", 1_000_000),
            ("1", NANO),
            ("1k", 1_000 * NANO),
            ("1M", 1_000_000 * NANO),
            ("1G", 1_000_000_000 * NANO),
            ("1T", 1_000_000_000_000 * NANO),
            ("1P", 1_000_000_000_000_000 * NANO),
            ("1E", 1_000_000_000_000_000_000 * NANO),
            ("1Ki", 1024 * NANO),
            ("1Mi", (1 << 20) * NANO),
            ("1Gi", (1 << 30) * NANO),
            ("1Ti", (1 << 40) * NANO),
            ("1Pi", (1 << 50) * NANO),
            ("1Ei", (1 << 60) * NANO),
            ("1e3", 1_000 * NANO),
            ("1E3", 1_000 * NANO),
            ("1e+3", 1_000 * NANO),
            ("1.5E-2", 15_000_000),
            ("5e-9", 5),
            ("12e0", 12 * NANO),
        ];
        for (text, nanos) in cases {
            assert_eq!(q(text).nanos(), nanos, "{text}");
        }
    }

    #[test]
    fn formats_follow_the_suffix() {
        assert_eq!(q("1Ki").format(), QuantityFormat::BinarySI);
        assert_eq!(q("1k").format(), QuantityFormat::DecimalSI);
        assert_eq!(q("1").format(), QuantityFormat::DecimalSI);
        assert_eq!(q("1e3").format(), QuantityFormat::DecimalExponent);
    }

    #[test]
    fn signs_and_fractions_as_kubernetes_reads_them() {
        assert!(q("-1").is_negative());
        assert_eq!(q("-1").value(), -1);
        assert_eq!(q("-1.5").value(), -2, "rounded away from zero");
        assert_eq!(q("-100m").milli_value(), -100);
        assert_eq!(q("+2").value(), 2);
        assert_eq!(q("1.").value(), 1);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("1.G").value(), 1_000_000_000);
        assert_eq!(q("007").value(), 7);
        assert!(q("0").is_zero());
        assert!(q("0.000Gi").is_zero());
        assert!(!q("-0").is_negative());
        assert_eq!(q(" 250m ").milli_value(), 250, "whitespace is trimmed");
    }

    #[test]
    fn finer_precision_rounds_up() {
        assert_eq!(q("0.1n").nanos(), 1);
        assert_eq!(q("1.0000000001").nanos(), NANO + 1);
        assert_eq!(q("-0.1n").nanos(), -1);
        assert_eq!(q("1.0000000000").nanos(), NANO, "trailing zeros are exact");
        assert_eq!(q("0.1Ki").nanos(), 102_400_000_000);
        assert_eq!(q("1e-30").nanos(), 1);
        assert_eq!(
            q("1.000000000000000000000000000000000000000000000000001").nanos(),
            NANO + 1,
            "more fraction digits than an i128 holds"
        );
        assert_eq!(
            q("0.0000000000000000000000000000000000000000000").nanos(),
            0
        );
    }

    #[test]
    fn exact_binary_fractions() {
        assert_eq!(q("1.5Gi").value(), 1_610_612_736);
        assert_eq!(q("0.001Ki").nanos(), 1_024_000_000);
        assert_eq!(q("1.25Ei").value(), 5 << 58);
    }

    #[test]
    fn junk_is_rejected_with_kubernetes_message() {
        for junk in [
            "abc", "1.2.3", "1 Gi", "--1", "1Gix", "Mi", "1,5", "0x10", "1e", "1e3.5", "1eK", "½",
            ".", "-", "+", "Mi", "-.Ki",
        ] {
            let error = Quantity::new(junk).parse();
            assert!(error.is_err(), "{junk:?} should not parse");
        }
        assert_eq!(
            err("1.2.3").to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
        assert_eq!(err("abc"), QuantityError::Format);
        assert_eq!(err(""), QuantityError::Empty);
        assert_eq!(err("   "), QuantityError::Empty);
        assert_eq!(
            err("1Kb"),
            QuantityError::Format,
            "b is not a suffix letter"
        );
        assert!(matches!(err("1KM"), QuantityError::Suffix { .. }));
        assert!(matches!(err("1mi"), QuantityError::Suffix { .. }));
        assert!(err("1e").to_string().contains("suffix"));
    }

    #[test]
    fn overflow_is_rejected() {
        assert_eq!(err("1e40"), QuantityError::Overflow);
        assert_eq!(
            err("999999999999999999999999999999999Ei"),
            QuantityError::Overflow
        );
        assert_eq!(err("1e9999999999999999999999"), QuantityError::Overflow);
        assert_eq!(
            err("-200000000000000000000000000000000"),
            QuantityError::Overflow
        );
        // The largest magnitudes that do fit.
        assert_eq!(q("100000000000000000000000000000").value(), 10i128.pow(29));
        assert_eq!(q("1e-9999999999999999999999").nanos(), 1, "tiny rounds up");
    }

    #[test]
    fn canonical_constructors() {
        assert_eq!(Quantity::from_milli(1500).0, "1500m");
        assert_eq!(Quantity::from_milli(2000).0, "2");
        assert_eq!(Quantity::from_milli(0).0, "0");
        assert_eq!(Quantity::from_milli(-250).0, "-250m");
        assert_eq!(Quantity::from_units(67_108_864).0, "64Mi");
        assert_eq!(Quantity::from_units(1024).0, "1Ki");
        assert_eq!(Quantity::from_units(3 << 30).0, "3Gi");
        assert_eq!(Quantity::from_units(1 << 60).0, "1Ei");
        assert_eq!(Quantity::from_units(1000).0, "1000");
        assert_eq!(Quantity::from_units(0).0, "0");
        assert_eq!(Quantity::from_units(-2048).0, "-2Ki");
        assert_eq!(q("1536Mi").to_quantity().0, "1536Mi");
        assert_eq!(q("0.5").to_quantity().0, "500m");
        assert_eq!(q("5n").to_string(), "5n");
        // Canonical text parses back to the same amount.
        for text in ["1500m", "64Mi", "1e3", "0.5Gi", "7n", "-3"] {
            assert_eq!(q(&q(text).to_quantity().0), q(text), "{text}");
        }
    }

    #[test]
    fn comparisons_use_the_amount() {
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1"), q("1000m"));
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("-1") < q("0"));
    }

    #[test]
    fn from_str_checks_and_keeps_the_text() {
        assert_eq!("1.50".parse::<Quantity>(), Ok(Quantity::new("1.50")));
        assert!("nope".parse::<Quantity>().is_err());
        assert_eq!("2k".parse::<ParsedQuantity>().map(|p| p.value()), Ok(2000));
    }

    #[test]
    fn deserializes_from_strings_and_numbers() -> Result<(), serde_json::Error> {
        let from_json = |json: &str| serde_json::from_str::<Quantity>(json);
        assert_eq!(from_json("\"250m\"")?, Quantity::new("250m"));
        assert_eq!(from_json("1")?, Quantity::new("1"));
        assert_eq!(from_json("-2")?, Quantity::new("-2"));
        assert_eq!(from_json("0.5")?, Quantity::new("0.5"));
        assert_eq!(from_json("1e3")?.parse().map(|p| p.value()), Ok(1000));
        assert_eq!(
            from_json("\"not a quantity\"")?,
            Quantity::new("not a quantity"),
            "malformed strings are kept for validation to report"
        );
        assert!(from_json("true").is_err());
        assert!(from_json("{}").is_err());
        assert_eq!(serde_json::to_string(&Quantity::new("64Mi"))?, "\"64Mi\"");

        let yaml: std::collections::BTreeMap<String, Quantity> =
            serde_yaml::from_str("cpu: 0.5\nmemory: 64Mi\ncount: 1\n")
                .map_err(serde::de::Error::custom)?;
        assert_eq!(yaml["cpu"], Quantity::new("0.5"));
        assert_eq!(yaml["memory"], Quantity::new("64Mi"));
        assert_eq!(yaml["count"], Quantity::new("1"));
        Ok(())
    }
}

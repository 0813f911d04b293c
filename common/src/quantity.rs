//! Resource quantities (`250m`, `1.5`, `64Mi`, `1G`), parsed exactly.
//!
//! STUB: to be completed (parse, canonical value in milli-units and units).

use serde::{Deserialize, Serialize};

/// A resource quantity as written by the user. The original text is kept so
/// that objects round-trip unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

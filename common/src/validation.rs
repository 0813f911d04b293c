//! Validation of API objects: every problem reported at once with its field path.
//!
//! STUB: to be completed.

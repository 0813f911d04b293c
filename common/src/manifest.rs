//! Manifests: multi-document YAML and JSON parsing with positions, and
//! decoding into typed objects with every error reported by path.
//!
//! STUB: to be completed.

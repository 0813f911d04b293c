//! Everything the master and the agents must agree on: the API objects in
//! Kubernetes' shape, resource quantities, validation, manifest parsing and the
//! table columns shown by `bramble get` and `kubectl get`.
//!
//! This crate does no I/O and knows nothing of tokio: it is pure data and pure
//! functions, so both sides (and their tests) can use it freely.

pub mod api;
pub mod defaults;
pub mod endpoint;
pub mod kinds;
pub mod manifest;
pub mod meta;
pub mod quantity;
pub mod table;
pub mod validation;
pub mod wire;

pub use kinds::{Kind, KindInfo};
pub use meta::{ObjectMeta, Status};
pub use quantity::Quantity;

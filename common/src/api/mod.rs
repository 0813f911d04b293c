//! The API objects bramble supports, in Kubernetes' JSON shape.
//!
//! Every kind has `apiVersion`, `kind`, `metadata`, and where Kubernetes has
//! them `spec` and `status`. Fields that bramble does not support are absent on
//! purpose: [`crate::manifest`] reports them by path instead of dropping them.

mod apps;
mod batch;
mod config;
mod discovery;
mod event;
mod namespace;
mod node;
mod pod;
mod service;

pub use apps::*;
pub use batch::*;
pub use config::*;
pub use discovery::*;
pub use event::*;
pub use namespace::*;
pub use node::*;
pub use pod::*;
pub use service::*;

use crate::meta::ObjectMeta;

/// Implemented by every top-level API object.
pub trait Resource: serde::Serialize + serde::de::DeserializeOwned {
    /// The object's kind, as in `kind:`.
    const KIND: crate::Kind;
    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The object's metadata, mutable.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! impl_resource {
    ($ty:ty, $kind:expr) => {
        impl $crate::api::Resource for $ty {
            const KIND: $crate::Kind = $kind;
            fn metadata(&self) -> &$crate::meta::ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut $crate::meta::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use impl_resource;

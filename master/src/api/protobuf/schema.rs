//! The Kubernetes protobuf descriptors compiled from `master/proto` at build
//! time, and how an `apiVersion`/`kind` maps onto a message.
//!
//! The mapping is derived, not listed: `v1` types live in package
//! `k8s.io.api.core.v1`, `{group}/{version}` types in
//! `k8s.io.api.{first label of group}.{version}` (`apps/v1` ->
//! `k8s.io.api.apps.v1`, `discovery.k8s.io/v1` -> `k8s.io.api.discovery.v1`),
//! and the `meta.k8s.io` kinds (Status, DeleteOptions, WatchEvent, ...) in
//! `k8s.io.apimachinery.pkg.apis.meta.v1`. A new kind needs only its group's
//! `generated.proto` vendored and listed in `master/build.rs`.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// The descriptor set `build.rs` compiled (with comments, for OpenAPI).
const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.fds"));

/// Package of the `meta.k8s.io/v1` types.
pub const META_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
/// `runtime.Unknown`, the envelope of every protobuf body.
pub const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
/// `metav1.Time`: RFC 3339 seconds in JSON.
pub const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
/// `metav1.MicroTime`: RFC 3339 with microseconds in JSON.
pub const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
/// `metav1.Duration`: a Go duration string in JSON.
pub const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
/// `metav1.FieldsV1`: a JSON object in JSON, its bytes in protobuf.
pub const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
/// `resource.Quantity`: a string in JSON.
pub const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
/// `intstr.IntOrString`: a number or a string in JSON.
pub const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
/// `runtime.RawExtension`: any embedded JSON value.
pub const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// The compiled descriptors (decoded once).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is produced by build.rs from the vendored files: a failure
        // here is a build defect, caught by every protobuf test.
        DescriptorPool::decode(DESCRIPTOR_SET).unwrap_or_else(|_| DescriptorPool::new())
    })
}

/// The protobuf package holding the types of `api_version`.
pub fn package_of(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("k8s.io.api.core.{api_version}"),
        Some(("meta.k8s.io", version)) => format!("k8s.io.apimachinery.pkg.apis.meta.{version}"),
        Some((group, version)) => {
            let label = group.split('.').next().unwrap_or(group);
            format!("k8s.io.api.{label}.{version}")
        }
    }
}

/// The message for an `apiVersion` and `kind`, falling back to the
/// `meta.k8s.io/v1` types (a `Status` or `DeleteOptions` carries
/// `apiVersion: v1`).
pub fn message_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let pool = pool();
    pool.get_message_by_name(&format!("{}.{kind}", package_of(api_version)))
        .or_else(|| pool.get_message_by_name(&format!("{META_V1}.{kind}")))
}

/// A message of the compiled set by its full name.
pub fn message(full_name: &str) -> Option<MessageDescriptor> {
    pool().get_message_by_name(full_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::Kind;

    #[test]
    fn every_kind_and_its_list_has_a_message() {
        for kind in Kind::all() {
            let av = kind.api_version();
            assert!(message_for(av, kind.name()).is_some(), "{av} {kind}");
            assert!(
                message_for(av, &format!("{}List", kind.name())).is_some(),
                "{av} {kind}List"
            );
        }
        assert!(message_for("v1", "Status").is_some());
        assert!(message_for("meta.k8s.io/v1", "DeleteOptions").is_some());
        assert!(message(UNKNOWN).is_some());
        assert_eq!(package_of("discovery.k8s.io/v1"), "k8s.io.api.discovery.v1");
    }
}

//! What a DELETE asks for beyond removing one object, as kube-apiserver
//! decides it before the garbage collector and the namespace controller
//! finish the work:
//! - `propagationPolicy` (`DeleteOptions` or the query): `Background` (the
//!   default: the object goes now, the garbage collector then deletes its
//!   dependents), `Foreground` (the `foregroundDeletion` finalizer: the
//!   object stays, marked, until its blocking dependents are gone) or
//!   `Orphan` (the `orphan` finalizer: the collector removes the
//!   dependents' references to it, then it goes). `orphanDependents: true`
//!   is the old spelling of `Orphan`.
//! - a Namespace is never removed at once: it gets the `kubernetes`
//!   finalizer (`spec.finalizers`) and `status.phase: Terminating`; the
//!   namespace controller deletes what is in it, then the finalizer.
//!
//! Pods keep their own graceful deletion and take no propagation policy
//! here (a pod owns nothing the controllers make).

use bramble_common::Kind;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::store::{ObjectKey, Precondition, Store};

/// The finalizer of an object deleted with `propagationPolicy: Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer of an object deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer the namespace controller removes (`spec.finalizers`).
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// The namespaces Kubernetes refuses to delete.
const PROTECTED_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// A deletion's `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete now; dependents are collected after.
    Background,
    /// Delete the dependents first, then the object.
    Foreground,
    /// Keep the dependents, without their reference to the object.
    Orphan,
}

impl Propagation {
    /// Parses a `propagationPolicy` (absent: `Background`).
    pub fn parse(value: Option<&str>) -> Result<Propagation, ApiError> {
        match value {
            None | Some("") | Some("Background") => Ok(Propagation::Background),
            Some("Foreground") => Ok(Propagation::Foreground),
            Some("Orphan") => Ok(Propagation::Orphan),
            Some(other) => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }

    /// The finalizer that makes the garbage collector act, if any.
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
        }
    }
}

/// Refuses to delete the namespaces Kubernetes protects.
pub fn protect_namespace(name: &str) -> Result<(), ApiError> {
    if PROTECTED_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(
            Kind::Namespace,
            name,
            "this namespace may not be deleted",
        ));
    }
    Ok(())
}

/// Before the store deletes `key`: writes the finalizer the deletion needs
/// (and a namespace's `Terminating` phase). Returns the object as written
/// when the deletion must go through finalizers (the store then only marks
/// it), `None` for a plain deletion.
pub async fn prepare(
    store: &Store,
    key: &ObjectKey,
    precondition: &Precondition,
    policy: Propagation,
) -> Result<Option<Value>, ApiError> {
    let namespace = key.kind == Kind::Namespace;
    let finalizer = match (namespace, policy.finalizer()) {
        (true, _) => NAMESPACE_FINALIZER,
        (false, _) if key.kind == Kind::Pod => return Ok(None),
        (false, Some(finalizer)) => finalizer,
        (false, None) => return Ok(None),
    };
    let mut object = store
        .get(key)
        .await?
        .ok_or_else(|| ApiError::not_found(key.kind, &key.name))?;
    let list = if namespace {
        &mut object["spec"]["finalizers"]
    } else {
        &mut object["metadata"]["finalizers"]
    };
    let mut finalizers: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    let had = finalizers.iter().any(|f| f == finalizer);
    if !had {
        finalizers.push(json!(finalizer));
    }
    *list = Value::Array(finalizers);
    if namespace {
        let mut status = object.get("status").cloned().unwrap_or_else(|| json!({}));
        if had && status["phase"] == "Terminating" {
            return Ok(Some(object));
        }
        status["phase"] = json!("Terminating");
        let written = store
            .update_with_status(key, object, status, precondition.clone())
            .await?;
        return Ok(Some(written));
    }
    if had {
        return Ok(Some(object));
    }
    Ok(Some(store.update(key, object, precondition.clone()).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_policies_parse_as_kubernetes_spells_them() {
        assert_eq!(Propagation::parse(None).ok(), Some(Propagation::Background));
        assert_eq!(
            Propagation::parse(Some("Orphan")).ok(),
            Some(Propagation::Orphan)
        );
        assert_eq!(
            Propagation::parse(Some("Foreground")).ok(),
            Some(Propagation::Foreground)
        );
        let error = Propagation::parse(Some("orphan")).expect_err("refused");
        assert!(error.0.message.contains("Unsupported value"), "{error:?}");
        assert!(protect_namespace("default").is_err());
        assert!(protect_namespace("shop").is_ok());
    }
}

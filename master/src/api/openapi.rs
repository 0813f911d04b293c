//! A minimal OpenAPI v3 document, just enough for kubectl's validation.
//!
//! kubectl (`--validate=strict`, its default) asks the server's OpenAPI v3
//! document whether the PATCH operation of a kind takes the `fieldValidation`
//! query parameter. If it does, kubectl leaves validation to the server (which
//! bramble always does strictly: unknown fields are reported by path). Without
//! it kubectl would try client-side schema validation, which needs the full
//! Kubernetes schema. The PATCH operations list merge patch and JSON patch as
//! body types, so kubectl computes strategic merge patches from its built-in
//! types rather than from this (schema-less) document.

use bramble_common::Kind;
use serde_json::{json, Map, Value};

/// A stable hash for the documents' URLs (they change only with the binary).
fn doc_hash() -> String {
    format!("bramble-{}", env!("CARGO_PKG_VERSION").replace('.', "-"))
}

/// The group versions served, as `(url path, group, version)`.
fn group_versions() -> [(&'static str, &'static str, &'static str); 4] {
    [
        ("api/v1", "", "v1"),
        ("apis/apps/v1", "apps", "v1"),
        ("apis/batch/v1", "batch", "v1"),
        ("apis/discovery.k8s.io/v1", "discovery.k8s.io", "v1"),
    ]
}

/// `/openapi/v3`.
pub fn root() -> Value {
    let mut paths = Map::new();
    for (path, _, _) in group_versions() {
        paths.insert(
            path.to_string(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc_hash())}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{path}` for one group version, or None.
pub fn group_version(path: &str) -> Option<Value> {
    let (prefix, group, version) = group_versions().into_iter().find(|(p, _, _)| *p == path)?;
    let mut paths = Map::new();
    for kind in Kind::all().iter().filter(|k| k.info().group == group) {
        let info = kind.info();
        let object_path = if info.namespaced {
            format!(
                "/{prefix}/namespaces/{{namespace}}/{}/{{name}}",
                info.plural
            )
        } else {
            format!("/{prefix}/{}/{{name}}", info.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": info.kind});
        let parameters = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        paths.insert(
            object_path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", info.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": parameters,
                    "requestBody": {"content": {
                        "application/json-patch+json": {},
                        "application/merge-patch+json": {},
                    }},
                    "responses": {"200": {"description": "OK"}},
                },
                "put": {
                    "operationId": format!("replace{}", info.kind),
                    "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": parameters,
                    "responses": {"200": {"description": "OK"}},
                },
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Bramble", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_operation_taking_field_validation() {
        for kind in Kind::all() {
            let info = kind.info();
            let path = if info.group.is_empty() {
                "api/v1".to_string()
            } else {
                format!("apis/{}/v1", info.group)
            };
            let doc = group_version(&path).expect("doc");
            let found = doc["paths"].as_object().expect("paths").values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"]["kind"] == info.kind
                    && p["patch"]["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|q| q["name"] == "fieldValidation"))
            });
            assert!(
                found,
                "{} has no PATCH operation with fieldValidation",
                info.kind
            );
        }
        assert!(root()["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("/openapi/v3/apis/apps/v1?hash=")));
    }
}

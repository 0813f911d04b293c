//! Discovery documents (`/version`, `/api`, `/apis`, `/api/v1`,
//! `/apis/apps/v1`) derived from the kind registry, in the legacy
//! (non-aggregated) format that every kubectl understands.

use bramble_common::Kind;
use serde_json::{json, Value};

/// The groups bramble serves: `("", "v1")` is the core group.
const GROUPS: [(&str, &str); 4] = [
    ("", "v1"),
    ("apps", "v1"),
    ("batch", "v1"),
    ("discovery.k8s.io", "v1"),
];

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0-bramble.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

fn group_json(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({
        "name": name,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `/apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, version)| group_json(group, version))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, or None for a group bramble does not serve.
pub fn group(name: &str) -> Option<Value> {
    GROUPS
        .iter()
        .find(|(group, _)| !group.is_empty() && *group == name)
        .map(|(group, version)| {
            let mut doc = group_json(group, version);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `/api/v1` or `/apis/{group}/{version}`, or None for an unknown group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !GROUPS.contains(&(group, version)) {
        return None;
    }
    let mut resources = Vec::new();
    for kind in Kind::all().iter().filter(|k| k.info().group == group) {
        let info = kind.info();
        resources.push(json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": info.short_names,
            "categories": if in_category_all(*kind) { vec!["all"] } else { vec![] },
        }));
        if has_status_subresource(*kind) {
            resources.push(json!({
                "name": format!("{}/status", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if super::scale::has_scale(*kind) {
            resources.push(json!({
                "name": format!("{}/scale", info.plural),
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if *kind == Kind::Pod {
            resources.push(json!({
                "name": "pods/eviction",
                "singularName": "",
                "namespaced": true,
                "group": "policy",
                "version": "v1",
                "kind": "Eviction",
                "verbs": ["create"],
            }));
            resources.push(json!({
                "name": "pods/log",
                "singularName": "",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["get"],
            }));
            resources.push(json!({
                "name": "pods/exec",
                "singularName": "",
                "namespaced": true,
                "kind": "PodExecOptions",
                "verbs": ["create", "get"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Kinds listed by `kubectl get all`, as in Kubernetes.
fn in_category_all(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Pod | Kind::Service | Kind::Deployment | Kind::ReplicaSet | Kind::DaemonSet
    )
}

/// True for kinds whose `status` is only written through the `status` subresource.
pub fn has_status_subresource(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::ConfigMap
            | Kind::Secret
            | Kind::Event
            | Kind::EndpointSlice
            | Kind::Endpoints
            | Kind::ControllerRevision
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_cover_every_kind_once() {
        let core = resource_list("", "v1").expect("core");
        let apps = resource_list("apps", "v1").expect("apps");
        let discovery = resource_list("discovery.k8s.io", "v1").expect("discovery");
        let batch = resource_list("batch", "v1").expect("batch");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .into_iter()
            .chain(apps["resources"].as_array())
            .chain(discovery["resources"].as_array())
            .chain(batch["resources"].as_array())
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .filter(|n| !n.contains('/'))
            .collect();
        assert_eq!(names.len(), Kind::all().len());
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(resource_list("batch", "v2").is_none());
        assert_eq!(apps["groupVersion"], "apps/v1");
    }
}

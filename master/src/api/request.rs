//! Turns a request path into a typed [`Route`]: which document, or which
//! object or collection of which kind, and which subresource.

use bramble_common::Kind;

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/readyz`, `/livez`
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    GroupList,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    ResourceList {
        /// API group (`""` for core).
        group: String,
        /// Version.
        version: String,
    },
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/{group-version path}`
    OpenApiGroupVersion(String),
    /// `/openapi/v2` (not served: answered 404 so kubectl falls back)
    OpenApiV2,
    /// An object or a collection of objects.
    Resource(ResourceTarget),
    /// Bramble's own endpoints under `/bramble/v1/`.
    Bramble(String),
}

/// An object or collection addressed by a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTarget {
    /// The kind.
    pub kind: Kind,
    /// The namespace from the path (None: cluster-scoped, or all namespaces).
    pub namespace: Option<String>,
    /// The object name (None: the collection).
    pub name: Option<String>,
    /// A subresource such as `status`.
    pub subresource: Option<Subresource>,
}

/// Subresources bramble serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`
    Status,
    /// `/log` (pods only)
    Log,
    /// `/exec` (pods only)
    Exec,
    /// `/scale` (Deployments and ReplicaSets: autoscaling/v1 `Scale`)
    Scale,
    /// `/eviction` (pods only: policy/v1 `Eviction`)
    Eviction,
}

/// Why a path is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute;

/// Parse a request path (without the query string).
pub fn parse_path(path: &str) -> Result<Route, NoRoute> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["version"] => Ok(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => Ok(Route::Health),
        ["api"] => Ok(Route::CoreVersions),
        ["apis"] => Ok(Route::GroupList),
        ["apis", group] => Ok(Route::Group(group.to_string())),
        ["api", version] => Ok(Route::ResourceList {
            group: String::new(),
            version: version.to_string(),
        }),
        ["apis", group, version] => Ok(Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        }),
        ["openapi", "v3"] => Ok(Route::OpenApiRoot),
        ["openapi", "v3", rest @ ..] => Ok(Route::OpenApiGroupVersion(rest.join("/"))),
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] => Ok(Route::OpenApiV2),
        ["bramble", "v1", rest @ ..] => Ok(Route::Bramble(rest.join("/"))),
        ["api", "v1", rest @ ..] => resource_target("", rest).map(Route::Resource),
        ["apis", "apps", "v1", rest @ ..] => resource_target("apps", rest).map(Route::Resource),
        ["apis", "batch", "v1", rest @ ..] => resource_target("batch", rest).map(Route::Resource),
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => {
            resource_target("discovery.k8s.io", rest).map(Route::Resource)
        }
        _ => Err(NoRoute),
    }
}

fn resource_target(group: &str, rest: &[&str]) -> Result<ResourceTarget, NoRoute> {
    let subresource = |plural: &&str, s: &str| match s {
        "status" => Ok(Subresource::Status),
        "log" if plural == &"pods" => Ok(Subresource::Log),
        "exec" if plural == &"pods" => Ok(Subresource::Exec),
        "eviction" if plural == &"pods" => Ok(Subresource::Eviction),
        "scale" if matches!(*plural, "deployments" | "replicasets") => Ok(Subresource::Scale),
        _ => Err(NoRoute),
    };
    // Namespaced paths: namespaces/{ns}/{plural}[/{name}[/{sub}]].
    if let ["namespaces", namespace, plural, tail @ ..] = rest {
        if let Some(kind) = Kind::from_group_plural(group, plural).filter(|k| k.namespaced()) {
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(name.to_string()), None),
                [name, sub] => (Some(name.to_string()), Some(subresource(plural, sub)?)),
                _ => return Err(NoRoute),
            };
            return Ok(ResourceTarget {
                kind,
                namespace: Some(namespace.to_string()),
                name,
                subresource: sub,
            });
        }
    }
    // Cluster-scoped objects, or namespaced kinds listed across namespaces.
    let (plural, tail) = rest.split_first().ok_or(NoRoute)?;
    let kind = Kind::from_group_plural(group, plural).ok_or(NoRoute)?;
    let (name, sub) = match tail {
        [] => (None, None),
        [name] if !kind.namespaced() => (Some(name.to_string()), None),
        [name, sub] if !kind.namespaced() => {
            (Some(name.to_string()), Some(subresource(plural, sub)?))
        }
        _ => return Err(NoRoute),
    };
    Ok(ResourceTarget {
        kind,
        namespace: None,
        name,
        subresource: sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> ResourceTarget {
        match parse_path(path) {
            Ok(Route::Resource(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_namespaced_and_cluster_paths() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(t.kind, Kind::Pod);
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource, Some(Subresource::Status));

        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(t.kind, Kind::Namespace);
        assert_eq!(t.name.as_deref(), Some("kube-system"));

        let t = target("/api/v1/namespaces/kube-system/status");
        assert_eq!(
            (t.kind, t.subresource),
            (Kind::Namespace, Some(Subresource::Status))
        );

        let t = target("/apis/apps/v1/deployments");
        assert_eq!(
            (t.kind, t.namespace, t.name),
            (Kind::Deployment, None, None)
        );

        let t = target("/api/v1/nodes/pi-1");
        assert_eq!((t.kind, t.name.as_deref()), (Kind::Node, Some("pi-1")));
    }

    #[test]
    fn refuses_unknown_paths() {
        assert_eq!(parse_path("/api/v1/widgets"), Err(NoRoute));
        assert_eq!(parse_path("/api/v1/pods/web"), Err(NoRoute));
        assert_eq!(parse_path("/apis/batch/v1/cronjobs"), Err(NoRoute));
        assert_eq!(
            parse_path("/api/v1/namespaces/default/pods/web/attach"),
            Err(NoRoute)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/default/services/web/exec"),
            Err(NoRoute)
        );
        assert_eq!(
            target("/api/v1/namespaces/default/pods/web/exec").subresource,
            Some(Subresource::Exec)
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/default/services/web/log"),
            Err(NoRoute)
        );
        assert_eq!(
            target("/api/v1/namespaces/default/pods/web/log").subresource,
            Some(Subresource::Log)
        );
        assert_eq!(parse_path("/version"), Ok(Route::Version));
    }
}

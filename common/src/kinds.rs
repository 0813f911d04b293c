//! The registry of supported kinds: group, version, plural name, scope and
//! short names. The API routes, discovery documents and the CLI's `KIND`
//! argument are all derived from this one table.

use serde_json::Value;

use crate::api::*;
use crate::meta::ObjectMeta;

/// A kind bramble serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `v1/Namespace`
    Namespace,
    /// `v1/Node`
    Node,
    /// `v1/Pod`
    Pod,
    /// `v1/Service`
    Service,
    /// `v1/ConfigMap`
    ConfigMap,
    /// `v1/Secret`
    Secret,
    /// `v1/Event`
    Event,
    /// `apps/v1/Deployment`
    Deployment,
    /// `apps/v1/ReplicaSet`
    ReplicaSet,
    /// `apps/v1/DaemonSet`
    DaemonSet,
    /// `discovery.k8s.io/v1/EndpointSlice`
    EndpointSlice,
    /// `v1/Endpoints`
    Endpoints,
    /// `apps/v1/ControllerRevision`
    ControllerRevision,
    /// `batch/v1/Job`
    Job,
}

/// Static facts about a [`Kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The kind's name, as in `kind:`.
    pub kind: &'static str,
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// The `apiVersion` written in objects: `v1` for the core group,
    /// `{group}/{version}` otherwise.
    pub api_version: &'static str,
    /// Plural resource name used in URLs.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// True for namespaced kinds.
    pub namespaced: bool,
    /// Short names accepted on the command line.
    pub short_names: &'static [&'static str],
}

const ALL: [Kind; 14] = [
    Kind::Namespace,
    Kind::Node,
    Kind::Pod,
    Kind::Service,
    Kind::ConfigMap,
    Kind::Secret,
    Kind::Event,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::DaemonSet,
    Kind::EndpointSlice,
    Kind::Endpoints,
    Kind::ControllerRevision,
    Kind::Job,
];

impl Kind {
    /// Every supported kind.
    pub fn all() -> &'static [Kind] {
        &ALL
    }

    /// Static facts about this kind.
    pub fn info(self) -> &'static KindInfo {
        macro_rules! info {
            ($kind:literal, $group:literal, $plural:literal, $singular:literal, $ns:literal, [$($short:literal),*]) => {
                info!($kind, $group, "v1", $plural, $singular, $ns, [$($short),*])
            };
            ($kind:literal, $group:literal, $version:literal, $plural:literal, $singular:literal, $ns:literal, [$($short:literal),*]) => {
                {
                const INFO: KindInfo = KindInfo {
                    kind: $kind,
                    group: $group,
                    version: $version,
                    api_version: if $group.is_empty() { $version } else { concat!($group, "/", $version) },
                    plural: $plural,
                    singular: $singular,
                    namespaced: $ns,
                    short_names: &[$($short),*],
                };
                &INFO
                }
            };
        }
        match self {
            Kind::Namespace => info!("Namespace", "", "namespaces", "namespace", false, ["ns"]),
            Kind::Node => info!("Node", "", "nodes", "node", false, ["no"]),
            Kind::Pod => info!("Pod", "", "pods", "pod", true, ["po"]),
            Kind::Service => info!("Service", "", "services", "service", true, ["svc"]),
            Kind::ConfigMap => info!("ConfigMap", "", "configmaps", "configmap", true, ["cm"]),
            Kind::Secret => info!("Secret", "", "secrets", "secret", true, []),
            Kind::Event => info!("Event", "", "events", "event", true, ["ev"]),
            Kind::Deployment => {
                info!(
                    "Deployment",
                    "apps",
                    "deployments",
                    "deployment",
                    true,
                    ["deploy"]
                )
            }
            Kind::ReplicaSet => info!(
                "ReplicaSet",
                "apps",
                "replicasets",
                "replicaset",
                true,
                ["rs"]
            ),
            Kind::DaemonSet => info!("DaemonSet", "apps", "daemonsets", "daemonset", true, ["ds"]),
            Kind::EndpointSlice => info!(
                "EndpointSlice",
                "discovery.k8s.io",
                "endpointslices",
                "endpointslice",
                true,
                []
            ),
            Kind::Endpoints => info!("Endpoints", "", "endpoints", "endpoints", true, ["ep"]),
            Kind::ControllerRevision => info!(
                "ControllerRevision",
                "apps",
                "controllerrevisions",
                "controllerrevision",
                true,
                []
            ),
            Kind::Job => info!("Job", "batch", "jobs", "job", true, []),
        }
    }

    /// The `apiVersion` of this kind (`v1`, `apps/v1`, `batch/v1`, ...).
    pub fn api_version(self) -> &'static str {
        self.info().api_version
    }

    /// The kind's name, as in `kind:`.
    pub fn name(self) -> &'static str {
        self.info().kind
    }

    /// True for namespaced kinds.
    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }

    /// Look up a kind by `apiVersion` and `kind` as written in a manifest.
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<Kind> {
        ALL.iter()
            .copied()
            .find(|k| k.name() == kind && k.api_version() == api_version)
    }

    /// Look up a kind by API group and plural resource name (URL form).
    pub fn from_group_plural(group: &str, plural: &str) -> Option<Kind> {
        ALL.iter()
            .copied()
            .find(|k| k.info().group == group && k.info().plural == plural)
    }

    /// Look up a kind as typed on the command line: plural, singular, short
    /// name or kind, in any case, optionally qualified with its group
    /// (`deployments.apps`).
    pub fn from_cli_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let (bare, group) = match lower.split_once('.') {
            Some((bare, group)) => (bare.to_string(), Some(group.to_string())),
            None => (lower, None),
        };
        ALL.iter().copied().find(|k| {
            let info = k.info();
            let name_matches = info.plural == bare
                || info.singular == bare
                || info.kind.eq_ignore_ascii_case(&bare)
                || info.short_names.contains(&bare.as_str());
            let group_matches = group.as_deref().is_none_or(|g| g == info.group);
            name_matches && group_matches
        })
    }

    /// A comma-separated list of every `apiVersion/kind`, for error messages.
    pub fn supported_list() -> String {
        ALL.iter()
            .map(|k| format!("{}/{}", k.api_version(), k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An object of any supported kind, decoded into its typed form.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum AnyObject {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    Service(Service),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Event(Event),
    Deployment(Deployment),
    ReplicaSet(ReplicaSet),
    DaemonSet(DaemonSet),
    EndpointSlice(EndpointSlice),
    Endpoints(Endpoints),
    ControllerRevision(ControllerRevision),
    Job(Job),
}

macro_rules! each_variant {
    ($self:expr, $obj:ident => $body:expr) => {
        match $self {
            AnyObject::Namespace($obj) => $body,
            AnyObject::Node($obj) => $body,
            AnyObject::Pod($obj) => $body,
            AnyObject::Service($obj) => $body,
            AnyObject::ConfigMap($obj) => $body,
            AnyObject::Secret($obj) => $body,
            AnyObject::Event($obj) => $body,
            AnyObject::Deployment($obj) => $body,
            AnyObject::ReplicaSet($obj) => $body,
            AnyObject::DaemonSet($obj) => $body,
            AnyObject::EndpointSlice($obj) => $body,
            AnyObject::Endpoints($obj) => $body,
            AnyObject::ControllerRevision($obj) => $body,
            AnyObject::Job($obj) => $body,
        }
    };
}

impl AnyObject {
    /// Decode `value` as an object of `kind`. Errors name the failing path.
    pub fn from_value(
        kind: Kind,
        value: Value,
    ) -> Result<AnyObject, serde_path_to_error::Error<serde_json::Error>> {
        fn de<T: serde::de::DeserializeOwned>(
            value: Value,
        ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
            serde_path_to_error::deserialize(value)
        }
        Ok(match kind {
            Kind::Namespace => AnyObject::Namespace(de(value)?),
            Kind::Node => AnyObject::Node(de(value)?),
            Kind::Pod => AnyObject::Pod(de(value)?),
            Kind::Service => AnyObject::Service(de(value)?),
            Kind::ConfigMap => AnyObject::ConfigMap(de(value)?),
            Kind::Secret => AnyObject::Secret(de(value)?),
            Kind::Event => AnyObject::Event(de(value)?),
            Kind::Deployment => AnyObject::Deployment(de(value)?),
            Kind::ReplicaSet => AnyObject::ReplicaSet(de(value)?),
            Kind::DaemonSet => AnyObject::DaemonSet(de(value)?),
            Kind::EndpointSlice => AnyObject::EndpointSlice(de(value)?),
            Kind::Endpoints => AnyObject::Endpoints(de(value)?),
            Kind::ControllerRevision => AnyObject::ControllerRevision(de(value)?),
            Kind::Job => AnyObject::Job(de(value)?),
        })
    }

    /// The object as JSON.
    pub fn to_value(&self) -> Value {
        each_variant!(self, obj => serde_json::to_value(obj).unwrap_or(Value::Null))
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyObject::Namespace(_) => Kind::Namespace,
            AnyObject::Node(_) => Kind::Node,
            AnyObject::Pod(_) => Kind::Pod,
            AnyObject::Service(_) => Kind::Service,
            AnyObject::ConfigMap(_) => Kind::ConfigMap,
            AnyObject::Secret(_) => Kind::Secret,
            AnyObject::Event(_) => Kind::Event,
            AnyObject::Deployment(_) => Kind::Deployment,
            AnyObject::ReplicaSet(_) => Kind::ReplicaSet,
            AnyObject::DaemonSet(_) => Kind::DaemonSet,
            AnyObject::EndpointSlice(_) => Kind::EndpointSlice,
            AnyObject::Endpoints(_) => Kind::Endpoints,
            AnyObject::ControllerRevision(_) => Kind::ControllerRevision,
            AnyObject::Job(_) => Kind::Job,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        each_variant!(self, obj => &obj.metadata)
    }

    /// The object's metadata, mutable.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_variant!(self, obj => &mut obj.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_names_resolve() {
        assert_eq!(Kind::from_cli_name("po"), Some(Kind::Pod));
        assert_eq!(
            Kind::from_cli_name("Deployments.apps"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::from_cli_name("deploy"), Some(Kind::Deployment));
        assert_eq!(Kind::from_cli_name("ConfigMap"), Some(Kind::ConfigMap));
        assert_eq!(Kind::from_cli_name("pods.apps"), None);
        assert_eq!(Kind::from_cli_name("widgets"), None);
    }

    #[test]
    fn api_version_and_kind_resolve() {
        assert_eq!(
            Kind::from_api_version_kind("apps/v1", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::from_api_version_kind("v1", "Deployment"), None);
        assert_eq!(Kind::from_group_plural("", "pods"), Some(Kind::Pod));
        assert!(Kind::supported_list().contains("apps/v1/DaemonSet"));
        assert_eq!(
            Kind::from_api_version_kind("discovery.k8s.io/v1", "EndpointSlice"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(
            Kind::from_cli_name("endpointslices.discovery.k8s.io"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(Kind::from_cli_name("ep"), Some(Kind::Endpoints));
    }
}

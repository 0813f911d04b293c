//! A container's environment from its pod, as the kubelet builds it
//! (`makeEnvironmentVariables`): `envFrom` ConfigMaps and Secrets first,
//! then `env` (literal values, ConfigMap and Secret keys, the downward
//! API's `fieldRef` and `resourceFieldRef`), a later variable replacing an
//! earlier one of the same name. The errors are the kubelet's messages, the
//! message of a `CreateContainerConfigError`.

use base64::Engine;
use bramble_common::api::{Container, ResourceFieldSelector};
use bramble_common::quantity::ParsedQuantity;

use super::PodDesired;

/// The environment of container `c` of the pod `d`, in order.
pub fn resolve_env(d: &PodDesired, c: &Container) -> Result<Vec<(String, String)>, String> {
    let namespace = d.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Environment::default();
    for source in &c.env_from {
        let prefix = source.prefix.as_deref().unwrap_or("");
        if let Some(reference) = &source.config_map_ref {
            match d.config_maps.get(&reference.name) {
                Some(config_map) => {
                    for (key, value) in &config_map.data {
                        out.set_from_source(format!("{prefix}{key}"), value.clone());
                    }
                }
                None if reference.optional.unwrap_or(false) => {}
                None => return Err(format!("configmap {:?} not found", reference.name)),
            }
        }
        if let Some(reference) = &source.secret_ref {
            match d.secrets.get(&reference.name) {
                Some(secret) => {
                    for key in secret_keys(secret) {
                        if let Some(value) = secret_value(secret, &key) {
                            out.set_from_source(format!("{prefix}{key}"), value);
                        }
                    }
                }
                None if reference.optional.unwrap_or(false) => {}
                None => return Err(format!("secret {:?} not found", reference.name)),
            }
        }
    }
    for e in &c.env {
        if let Some(v) = &e.value {
            out.set(e.name.clone(), v.clone());
            continue;
        }
        let Some(from) = &e.value_from else {
            out.set(e.name.clone(), String::new());
            continue;
        };
        if let Some(k) = &from.config_map_key_ref {
            let optional = k.optional.unwrap_or(false);
            match d.config_maps.get(&k.name) {
                None if optional => {}
                None => return Err(format!("configmap {:?} not found", k.name)),
                Some(config_map) => match config_map.data.get(&k.key) {
                    Some(v) => out.set(e.name.clone(), v.clone()),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            k.key, k.name
                        ))
                    }
                },
            }
        } else if let Some(k) = &from.secret_key_ref {
            let optional = k.optional.unwrap_or(false);
            match d.secrets.get(&k.name) {
                None if optional => {}
                None => return Err(format!("secret {:?} not found", k.name)),
                Some(secret) => match secret_value(secret, &k.key) {
                    Some(v) => out.set(e.name.clone(), v),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            k.key, k.name
                        ))
                    }
                },
            }
        } else if let Some(f) = &from.field_ref {
            let value = field_value(d, &f.field_path)
                .ok_or_else(|| format!("unsupported fieldRef {} (env {})", f.field_path, e.name))?;
            out.set(e.name.clone(), value);
        } else if let Some(r) = &from.resource_field_ref {
            out.set(e.name.clone(), resource_value(d, c, r)?);
        }
    }
    Ok(out.vars)
}

/// Variables in the order they were first set; a later value replaces an
/// earlier one in place.
#[derive(Default)]
struct Environment {
    vars: Vec<(String, String)>,
}

impl Environment {
    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    /// A key of an `envFrom` source: names that are not environment
    /// variable names (printable ASCII without `=`) are skipped, as the
    /// kubelet does.
    fn set_from_source(&mut self, name: String, value: String) {
        if !name.is_empty()
            && !name.contains('=')
            && name.bytes().all(|b| (b' '..=b'~').contains(&b))
        {
            self.set(name, value);
        }
    }
}

fn secret_keys(secret: &bramble_common::api::Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret
        .data
        .keys()
        .chain(secret.string_data.keys())
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn secret_value(secret: &bramble_common::api::Secret, key: &str) -> Option<String> {
    let bytes = secret
        .string_data
        .get(key)
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| {
            secret
                .data
                .get(key)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        })?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A downward API field of the pod, `None` for a path bramble does not serve.
fn field_value(d: &PodDesired, path: &str) -> Option<String> {
    let m = &d.pod.metadata;
    let status = d.pod.status.as_ref();
    let value = match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => Some(m.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => d.pod.spec.node_name.clone(),
        "spec.serviceAccountName" => Some("default".into()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        p => {
            if let Some(l) = p
                .strip_prefix("metadata.labels['")
                .and_then(|s| s.strip_suffix("']"))
            {
                m.labels.get(l).cloned()
            } else if let Some(a) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|s| s.strip_suffix("']"))
            {
                m.annotations.get(a).cloned()
            } else {
                return None;
            }
        }
    };
    Some(value.unwrap_or_default())
}

/// `resourceFieldRef` as the kubelet computes it
/// (`ExtractContainerResourceValue`): the container's limit (a request
/// defaults to the limit), else the node's allocatable amount, divided by
/// the divisor and rounded up.
fn resource_value(
    d: &PodDesired,
    c: &Container,
    selector: &ResourceFieldSelector,
) -> Result<String, String> {
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => d
            .pod
            .spec
            .containers
            .iter()
            .chain(&d.pod.spec.init_containers)
            .find(|other| other.name == name)
            .ok_or_else(|| format!("container {name} not found for resourceFieldRef"))?,
        None => c,
    };
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource: {}", selector.resource))?;
    let resources = container.resources.clone().unwrap_or_default();
    let limit = resources.limits.get(resource);
    let amount = match kind {
        "limits" => limit,
        "requests" => resources.requests.get(resource).or(limit),
        _ => None,
    };
    let parsed = amount.and_then(|q| q.as_str().parse::<ParsedQuantity>().ok());
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|q| q.as_str().parse::<ParsedQuantity>().ok())
        .filter(|q| !q.is_zero())
        .unwrap_or_else(|| ParsedQuantity::from_nanos(1_000_000_000));
    let ceil_div = |value: i128, unit: i128| -> i128 {
        if unit <= 0 {
            return value;
        }
        (value + unit - 1).div_euclid(unit)
    };
    let value = match (resource, parsed) {
        ("cpu", Some(q)) => ceil_div(q.milli_value(), divisor.milli_value()),
        ("cpu", None) => ceil_div(node_cpus() * 1000, divisor.milli_value()),
        ("memory", Some(q)) | ("ephemeral-storage", Some(q)) => {
            ceil_div(q.value(), divisor.value())
        }
        ("memory", None) => ceil_div(node_memory(), divisor.value()),
        ("ephemeral-storage", None) => ceil_div(node_disk(), divisor.value()),
        _ => {
            return Err(format!(
                "unsupported container resource: {}",
                selector.resource
            ))
        }
    };
    Ok(value.to_string())
}

fn node_cpus() -> i128 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i128)
}

fn node_memory() -> i128 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| crate::facts::parse_meminfo_total(&text))
        .map_or(0, i128::from)
}

fn node_disk() -> i128 {
    nix::sys::statvfs::statvfs("/").map_or(0, |fs| {
        i128::from(fs.blocks()) * i128::from(fs.fragment_size())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_common::api::{
        ConfigMap, EnvFromReference, EnvFromSource, EnvVar, EnvVarSource, KeySelector,
        ResourceRequirements, Secret,
    };
    use bramble_common::quantity::Quantity;

    fn desired() -> PodDesired {
        let mut d = PodDesired::default();
        d.pod.metadata.name = Some("web".into());
        d.pod.metadata.namespace = Some("apps".into());
        let mut cm = ConfigMap::default();
        cm.data.insert("MODE".into(), "fast".into());
        cm.data.insert("bad=name".into(), "x".into());
        d.config_maps.insert("cfg".into(), cm);
        let mut secret = Secret::default();
        secret.data.insert("TOKEN".into(), "czNjcjN0".into()); // s3cr3t
        d.secrets.insert("creds".into(), secret);
        d
    }

    fn var(name: &str, from: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(from),
        }
    }

    #[test]
    fn env_from_then_env_with_the_kubelets_precedence() {
        let d = desired();
        let c = Container {
            env_from: vec![
                EnvFromSource {
                    prefix: Some("CFG_".into()),
                    config_map_ref: Some(EnvFromReference {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    secret_ref: None,
                },
                EnvFromSource {
                    prefix: None,
                    config_map_ref: None,
                    secret_ref: Some(EnvFromReference {
                        name: "creds".into(),
                        optional: None,
                    }),
                },
            ],
            env: vec![EnvVar {
                name: "CFG_MODE".into(),
                value: Some("slow".into()),
                value_from: None,
            }],
            ..Container::default()
        };
        let env = resolve_env(&d, &c).expect("env");
        assert_eq!(
            env,
            vec![
                ("CFG_MODE".to_string(), "slow".to_string()),
                ("TOKEN".to_string(), "s3cr3t".to_string()),
            ]
        );
    }

    #[test]
    fn missing_sources_give_the_kubelets_messages() {
        let d = desired();
        let from_missing = |optional| Container {
            env_from: vec![EnvFromSource {
                config_map_ref: Some(EnvFromReference {
                    name: "absent".into(),
                    optional,
                }),
                ..EnvFromSource::default()
            }],
            ..Container::default()
        };
        assert_eq!(
            resolve_env(&d, &from_missing(None)),
            Err("configmap \"absent\" not found".into())
        );
        assert_eq!(resolve_env(&d, &from_missing(Some(true))), Ok(vec![]));
        let key = |name: &str, key: &str| Container {
            env: vec![var(
                "X",
                EnvVarSource {
                    config_map_key_ref: Some(KeySelector {
                        name: name.into(),
                        key: key.into(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                },
            )],
            ..Container::default()
        };
        assert_eq!(
            resolve_env(&d, &key("cfg", "NOPE")),
            Err("couldn't find key NOPE in ConfigMap apps/cfg".into())
        );
        assert_eq!(
            resolve_env(&d, &key("gone", "MODE")),
            Err("configmap \"gone\" not found".into())
        );
    }

    #[test]
    fn resource_field_refs_round_up_by_the_divisor() {
        let d = desired();
        let mut resources = ResourceRequirements::default();
        resources
            .limits
            .insert("cpu".into(), Quantity::new("1500m"));
        resources
            .limits
            .insert("memory".into(), Quantity::new("64Mi"));
        resources
            .requests
            .insert("cpu".into(), Quantity::new("250m"));
        let field = |name: &str, resource: &str, divisor: Option<&str>| {
            var(
                name,
                EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: None,
                        resource: resource.into(),
                        divisor: divisor.map(Quantity::new),
                    }),
                    ..EnvVarSource::default()
                },
            )
        };
        let c = Container {
            name: "app".into(),
            resources: Some(resources),
            env: vec![
                field("CPU_LIMIT", "limits.cpu", None),
                field("CPU_MILLIS", "limits.cpu", Some("1m")),
                field("CPU_REQUEST", "requests.cpu", Some("1m")),
                field("MEM_MI", "limits.memory", Some("1Mi")),
                field("MEM_REQUEST", "requests.memory", None),
            ],
            ..Container::default()
        };
        let env = resolve_env(&d, &c).expect("env");
        let get = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("CPU_LIMIT"), "2");
        assert_eq!(get("CPU_MILLIS"), "1500");
        assert_eq!(get("CPU_REQUEST"), "250");
        assert_eq!(get("MEM_MI"), "64");
        assert_eq!(get("MEM_REQUEST"), (64u64 << 20).to_string());
    }
}

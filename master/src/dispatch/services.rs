//! The Services the agents program, built from the store's Services and
//! EndpointSlices and split into the retained shards of
//! [`bramble_common::wire::services`].
//!
//! [`ServiceIndex`] keeps every Service and EndpointSlice (typed) and, on
//! each store event, says which shard it changed; dispatch rebuilds only
//! those shards after its debounce and publishes the ones whose content
//! changed ([`ServiceIndex::build_shard`] is pure and deterministic: the
//! Services sorted by namespace and name, their endpoints sorted by
//! address). Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bramble_common::api::{EndpointSlice, Service, LABEL_SERVICE_NAME};
use bramble_common::wire::{
    shard_of, ServiceShard, WireEndpoint, WireProtocol, WireService, WireServicePort,
    WireServiceType, SERVICE_SHARDS,
};
use bramble_common::Kind;
use serde_json::Value;

use super::index::NameKey;

/// Every Service and EndpointSlice, as the shards need them.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    /// Services by `(namespace, name)`.
    services: BTreeMap<NameKey, Service>,
    /// EndpointSlices by `(namespace, slice name)`.
    slices: HashMap<NameKey, EndpointSlice>,
    /// The slices of each Service (`kubernetes.io/service-name`).
    slices_by_service: HashMap<NameKey, BTreeSet<String>>,
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name`).
fn owner_of(slice: &EndpointSlice) -> Option<NameKey> {
    let name = slice.metadata.labels.get(LABEL_SERVICE_NAME)?;
    let namespace = slice.metadata.namespace.clone().unwrap_or_default();
    Some((namespace, name.clone()))
}

impl ServiceIndex {
    /// An index of `services` and `slices` (store JSON; objects that do not
    /// parse are left out).
    pub fn from_lists(services: &[Value], slices: &[Value]) -> ServiceIndex {
        let mut index = ServiceIndex::default();
        for object in services {
            index.apply_service(object_key(object), Some(object));
        }
        for object in slices {
            index.apply_slice(object_key(object), Some(object));
        }
        index
    }

    /// A store event for `kind` (`None`: deleted). Returns the shards it
    /// changes (none, one, or two for a slice moved between Services).
    pub fn apply(&mut self, kind: Kind, key: &NameKey, object: Option<&Value>) -> Vec<u32> {
        match kind {
            Kind::Service => self
                .apply_service(key.clone(), object)
                .into_iter()
                .collect(),
            Kind::EndpointSlice => self.apply_slice(key.clone(), object),
            _ => Vec::new(),
        }
    }

    fn apply_service(&mut self, key: NameKey, object: Option<&Value>) -> Option<u32> {
        let shard = shard_of(&key.0, &key.1, SERVICE_SHARDS);
        let parsed = object.and_then(|o| serde_json::from_value::<Service>(o.clone()).ok());
        let changed = match parsed {
            Some(service) => {
                let same = self
                    .services
                    .get(&key)
                    .is_some_and(|old| old.spec == service.spec && old.status == service.status);
                self.services.insert(key, service);
                !same
            }
            None => self.services.remove(&key).is_some(),
        };
        changed.then_some(shard)
    }

    fn apply_slice(&mut self, key: NameKey, object: Option<&Value>) -> Vec<u32> {
        let parsed = object.and_then(|o| serde_json::from_value::<EndpointSlice>(o.clone()).ok());
        let old = self.slices.remove(&key);
        let old_owner = old.as_ref().and_then(owner_of);
        if let Some(owner) = &old_owner {
            if let Some(set) = self.slices_by_service.get_mut(owner) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.slices_by_service.remove(owner);
                }
            }
        }
        let new_owner = parsed.as_ref().and_then(owner_of);
        let same = match (&old, &parsed) {
            (Some(a), Some(b)) => {
                a.endpoints == b.endpoints && a.ports == b.ports && old_owner == new_owner
            }
            _ => false,
        };
        if let (Some(slice), Some(owner)) = (parsed, new_owner.clone()) {
            self.slices_by_service
                .entry(owner)
                .or_default()
                .insert(key.1.clone());
            self.slices.insert(key, slice);
        }
        if same {
            return Vec::new();
        }
        let mut shards: Vec<u32> = old_owner
            .into_iter()
            .chain(new_owner)
            .map(|(ns, name)| shard_of(&ns, &name, SERVICE_SHARDS))
            .collect();
        shards.dedup();
        shards
    }

    /// The shard `shard` as the agents get it (revision left 0).
    pub fn build_shard(&self, shard: u32) -> ServiceShard {
        let services = self
            .services
            .iter()
            .filter(|((ns, name), _)| shard_of(ns, name, SERVICE_SHARDS) == shard)
            .map(|(key, service)| self.wire_service(key, service))
            .collect();
        ServiceShard {
            shard,
            shard_count: SERVICE_SHARDS,
            revision: 0,
            services,
        }
    }

    fn wire_service(&self, key: &NameKey, service: &Service) -> WireService {
        let spec = &service.spec;
        let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
        let type_ = match spec.type_.as_deref() {
            Some("ExternalName") => WireServiceType::ExternalName,
            _ if cluster_ip == "None" => WireServiceType::Headless,
            Some("NodePort") => WireServiceType::NodePort,
            Some("LoadBalancer") => WireServiceType::LoadBalancer,
            _ => WireServiceType::ClusterIp,
        };
        let ports: Vec<WireServicePort> = spec
            .ports
            .iter()
            .map(|p| WireServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: WireProtocol::from_api(p.protocol.as_deref()),
                port: u16::try_from(p.port).unwrap_or(0),
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            })
            .collect();
        let affinity_timeout_seconds = if spec.session_affinity.as_deref() == Some("ClientIP") {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(10_800)
        } else {
            0
        };
        let load_balancer_ips = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .map(|lb| lb.ingress.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        WireService {
            namespace: key.0.clone(),
            name: key.1.clone(),
            type_,
            cluster_ip: if matches!(
                type_,
                WireServiceType::Headless | WireServiceType::ExternalName
            ) {
                String::new()
            } else {
                cluster_ip
            },
            external_name: if type_ == WireServiceType::ExternalName {
                spec.external_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            endpoints: if type_ == WireServiceType::ExternalName {
                Vec::new()
            } else {
                self.endpoints_of(key, &ports)
            },
            ports,
            affinity_timeout_seconds,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            prefer_same_node: matches!(
                spec.traffic_distribution.as_deref(),
                Some("PreferSameNode") | Some("PreferClose")
            ),
            load_balancer_ips,
        }
    }

    /// The Service's endpoints from all its slices, one per address (a
    /// pod in two slices, e.g. for different ports, is merged), sorted.
    fn endpoints_of(&self, key: &NameKey, ports: &[WireServicePort]) -> Vec<WireEndpoint> {
        let mut by_address: BTreeMap<String, WireEndpoint> = BTreeMap::new();
        let Some(names) = self.slices_by_service.get(key) else {
            return Vec::new();
        };
        for name in names {
            let Some(slice) = self.slices.get(&(key.0.clone(), name.clone())) else {
                continue;
            };
            if !slice.address_type.is_empty() && slice.address_type != "IPv4" {
                continue;
            }
            // The slice's port for each Service port, matched by name (and
            // protocol), as kube-proxy does.
            let slice_ports: Vec<u16> = ports
                .iter()
                .map(|sp| {
                    slice
                        .ports
                        .iter()
                        .find(|p| {
                            p.name.clone().unwrap_or_default() == sp.name
                                && WireProtocol::from_api(p.protocol.as_deref()) == sp.protocol
                        })
                        .and_then(|p| p.port)
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or(0)
                })
                .collect();
            for endpoint in &slice.endpoints {
                let Some(address) = endpoint.addresses.first() else {
                    continue;
                };
                if address.parse::<std::net::Ipv4Addr>().is_err() {
                    continue;
                }
                let conditions = &endpoint.conditions;
                let entry = by_address
                    .entry(address.clone())
                    .or_insert_with(|| WireEndpoint {
                        address: address.clone(),
                        hostname: endpoint.hostname.clone().unwrap_or_default(),
                        node: endpoint.node_name.clone().unwrap_or_default(),
                        // Kubernetes: an unset `ready` means ready.
                        ready: conditions.ready.unwrap_or(true),
                        serving: conditions
                            .serving
                            .unwrap_or(conditions.ready.unwrap_or(true)),
                        terminating: conditions.terminating.unwrap_or(false),
                        ports: vec![0; ports.len()],
                    });
                for (slot, port) in entry.ports.iter_mut().zip(&slice_ports) {
                    if *slot == 0 {
                        *slot = *port;
                    }
                }
            }
        }
        by_address.into_values().collect()
    }
}

fn object_key(object: &Value) -> NameKey {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn web() -> Value {
        json!({"metadata": {"namespace": "default", "name": "web"},
               "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                                  {"name": "dns", "protocol": "UDP", "port": 53}],
                        "sessionAffinity": "ClientIP"}})
    }

    fn slice(name: &str, port: i64, addresses: &[(&str, bool)]) -> Value {
        json!({"metadata": {"namespace": "default", "name": name,
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "protocol": "TCP", "port": port}],
               "endpoints": addresses.iter().map(|(a, ready)| json!({
                   "addresses": [a], "conditions": {"ready": ready, "serving": ready},
                   "nodeName": "n1"})).collect::<Vec<_>>()})
    }

    #[test]
    fn a_service_with_its_slices_becomes_one_wire_service() {
        let index = ServiceIndex::from_lists(
            &[web()],
            &[
                slice(
                    "web-a",
                    8080,
                    &[("10.244.1.5", true), ("10.244.2.7", false)],
                ),
                slice("web-b", 9090, &[("10.244.1.9", true)]),
            ],
        );
        let shard = index.build_shard(shard_of("default", "web", SERVICE_SHARDS));
        assert_eq!(shard.services.len(), 1);
        let service = &shard.services[0];
        assert_eq!(service.type_, WireServiceType::NodePort);
        assert_eq!(service.cluster_ip, "10.96.0.20");
        assert_eq!(service.affinity_timeout_seconds, 10_800);
        assert_eq!(service.ports[0].node_port, 30080);
        assert_eq!(service.ports[1].protocol, WireProtocol::Udp);
        let endpoints: Vec<(&str, bool, &[u16])> = service
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.ready, e.ports.as_slice()))
            .collect();
        assert_eq!(
            endpoints,
            vec![
                ("10.244.1.5", true, &[8080, 0][..]),
                ("10.244.1.9", true, &[9090, 0][..]),
                ("10.244.2.7", false, &[8080, 0][..]),
            ]
        );
        // Other shards do not have it.
        let other = (shard.shard + 1) % SERVICE_SHARDS;
        assert!(index.build_shard(other).services.is_empty());
    }

    #[test]
    fn events_report_the_changed_shard_only_when_something_changed() {
        let mut index = ServiceIndex::default();
        let key = ("default".to_string(), "web".to_string());
        let shard = shard_of("default", "web", SERVICE_SHARDS);
        assert_eq!(index.apply(Kind::Service, &key, Some(&web())), vec![shard]);
        assert_eq!(
            index.apply(Kind::Service, &key, Some(&web())),
            Vec::<u32>::new()
        );
        let slice_key = ("default".to_string(), "web-a".to_string());
        let s = slice("web-a", 8080, &[("10.244.1.5", true)]);
        assert_eq!(
            index.apply(Kind::EndpointSlice, &slice_key, Some(&s)),
            vec![shard]
        );
        assert_eq!(
            index.apply(Kind::EndpointSlice, &slice_key, Some(&s)),
            Vec::<u32>::new()
        );
        let unready = slice("web-a", 8080, &[("10.244.1.5", false)]);
        assert_eq!(
            index.apply(Kind::EndpointSlice, &slice_key, Some(&unready)),
            vec![shard]
        );
        assert!(!index.build_shard(shard).services[0].endpoints[0].ready);
        assert_eq!(
            index.apply(Kind::EndpointSlice, &slice_key, None),
            vec![shard]
        );
        assert!(index.build_shard(shard).services[0].endpoints.is_empty());
        assert_eq!(index.apply(Kind::Service, &key, None), vec![shard]);
        assert!(index.build_shard(shard).services.is_empty());
        assert_eq!(index.apply(Kind::Pod, &key, None), Vec::<u32>::new());
    }

    #[test]
    fn headless_and_external_name_services() {
        let headless = json!({"metadata": {"namespace": "db", "name": "pg"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}});
        let external = json!({"metadata": {"namespace": "db", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let index = ServiceIndex::from_lists(&[headless, external], &[]);
        let pg = index.build_shard(shard_of("db", "pg", SERVICE_SHARDS));
        let pg = pg.services.iter().find(|s| s.name == "pg").unwrap();
        assert_eq!(pg.type_, WireServiceType::Headless);
        assert_eq!(pg.cluster_ip, "");
        let ext = index.build_shard(shard_of("db", "ext", SERVICE_SHARDS));
        let ext = ext.services.iter().find(|s| s.name == "ext").unwrap();
        assert_eq!(ext.type_, WireServiceType::ExternalName);
        assert_eq!(ext.external_name, "db.example.com");
    }
}

//! Service address and NodePort allocation, at admission (as kube-apiserver
//! does it in its Service REST storage).
//!
//! - ClusterIPs come from `--service-cidr` (default `10.96.0.0/16`). The
//!   network address and the broadcast address are never handed out, the
//!   first host (`10.96.0.1`) belongs to the `kubernetes` Service. As in
//!   Kubernetes (KEP-3070), the lower band of the range (1/16 of it, between
//!   16 and 256 addresses) is kept for addresses asked for by name (such as
//!   the cluster DNS `10.96.0.10`): dynamic allocation takes a random free
//!   address of the upper band first and falls back to the lower band only
//!   when the upper one is full.
//! - NodePorts come from `--service-node-port-range` (default `30000-32767`),
//!   with the same two bands.
//! - The allocation is a function of the Services in the store, read under
//!   one lock that the caller holds until its write is committed: nothing is
//!   kept beside the store, so a restart never forgets an address and two
//!   Services can never get the same one.
//! - A requested address or port is honoured or refused with Kubernetes'
//!   messages (`provided IP is already allocated`, `provided port is not in
//!   the valid range`).
//! - On update, an omitted `clusterIP` or `nodePort` keeps the old value;
//!   changing to or from `ExternalName` releases or allocates the address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use bramble_common::api::Service;
use bramble_common::validation::services::service_type;
use bramble_common::validation::FieldError;
use bramble_common::Kind;
use ipnet::Ipv4Net;
use rand::Rng;
use tokio::sync::{Mutex, MutexGuard};

use crate::store::{Store, StoreError};

/// The default `--service-cidr`.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";
/// The default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

/// Errors of the allocator's configuration and of reading the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceIpError {
    /// `--service-cidr` is not an IPv4 CIDR or too small.
    #[error("--service-cidr {0:?} is invalid: {1}")]
    BadCidr(String, String),
    /// `--service-node-port-range` is not `FROM-TO`.
    #[error("--service-node-port-range {0:?} is invalid: use FROM-TO with 1 <= FROM <= TO <= 65535 (e.g. 30000-32767)")]
    BadPortRange(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a Service cannot be admitted: field errors for a 422.
#[derive(Debug)]
pub enum AdmitError {
    /// The Service asks for something that cannot be given.
    Invalid(Vec<FieldError>),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for AdmitError {
    fn from(e: StoreError) -> Self {
        AdmitError::Store(e)
    }
}

/// Hands out ClusterIPs and NodePorts.
#[derive(Debug)]
pub struct ServiceAllocator {
    cidr: Ipv4Net,
    node_ports: RangeInclusive<u16>,
    lock: Mutex<()>,
}

/// Parses `FROM-TO`.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, ServiceIpError> {
    let bad = || ServiceIpError::BadPortRange(text.to_string());
    let (from, to) = text.split_once('-').ok_or_else(bad)?;
    let from: u16 = from.trim().parse().map_err(|_| bad())?;
    let to: u16 = to.trim().parse().map_err(|_| bad())?;
    if from == 0 || from > to {
        return Err(bad());
    }
    Ok(from..=to)
}

/// The size of the lower band kept for requested values (KEP-3070):
/// `size / 16`, at least 16 and at most 256.
fn static_band(size: u64) -> u64 {
    (size / 16).clamp(16, 256).min(size)
}

/// A random free value of `first..=last` (offsets from `base`), the upper
/// band first. `None` when every value is taken.
fn pick_free(size: u64, taken: impl Fn(u64) -> bool, rng: &mut impl Rng) -> Option<u64> {
    if size == 0 {
        return None;
    }
    let band = static_band(size);
    let bands = [(band, size), (0, band)];
    for (lo, hi) in bands {
        if lo >= hi {
            continue;
        }
        let span = hi - lo;
        let start = rng.random_range(0..span);
        for i in 0..span {
            let offset = lo + (start + i) % span;
            if !taken(offset) {
                return Some(offset);
            }
        }
    }
    None
}

/// What the other Services hold.
#[derive(Debug, Default)]
pub struct Taken {
    /// ClusterIPs.
    pub ips: BTreeSet<Ipv4Addr>,
    /// NodePorts (any protocol).
    pub node_ports: BTreeSet<u16>,
}

impl Taken {
    /// What every Service in `services` holds, except the one named `skip`
    /// (`namespace`, `name`).
    pub fn from_services(services: &[serde_json::Value], skip: Option<(&str, &str)>) -> Taken {
        let mut taken = Taken::default();
        for svc in services {
            let key = (
                svc["metadata"]["namespace"].as_str().unwrap_or(""),
                svc["metadata"]["name"].as_str().unwrap_or(""),
            );
            if Some(key) == skip {
                continue;
            }
            let spec = &svc["spec"];
            for ip in std::iter::once(&spec["clusterIP"])
                .chain(spec["clusterIPs"].as_array().into_iter().flatten())
            {
                if let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) {
                    taken.ips.insert(ip);
                }
            }
            for port in spec["ports"].as_array().into_iter().flatten() {
                if let Some(np) = port["nodePort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                {
                    taken.node_ports.insert(np);
                }
            }
        }
        taken
    }
}

impl ServiceAllocator {
    /// An allocator for `cidr` and `node_ports` (`FROM-TO`).
    pub fn new(cidr: &str, node_ports: &str) -> Result<ServiceAllocator, ServiceIpError> {
        let net: Ipv4Net = cidr.parse().map_err(|e| {
            ServiceIpError::BadCidr(cidr.to_string(), format!("{e}; use e.g. 10.96.0.0/16"))
        })?;
        if net.prefix_len() > 28 {
            return Err(ServiceIpError::BadCidr(
                cidr.to_string(),
                "it must hold at least 16 addresses (a /28 or larger)".into(),
            ));
        }
        Ok(ServiceAllocator {
            cidr: net.trunc(),
            node_ports: parse_port_range(node_ports)?,
            lock: Mutex::new(()),
        })
    }

    /// The service range.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The NodePort range.
    pub fn node_port_range(&self) -> RangeInclusive<u16> {
        self.node_ports.clone()
    }

    /// The address of the `kubernetes` Service: the range's first host.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// Hold this while allocating and writing a Service.
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Fill in (or check) `new`'s ClusterIP and NodePorts against what the
    /// other Services hold; `old` is the stored version on update. Call it
    /// with [`ServiceAllocator::lock`] held until the write is done.
    pub async fn admit(
        &self,
        store: &Store,
        new: &mut Service,
        old: Option<&Service>,
    ) -> Result<(), AdmitError> {
        let (services, _) = store.list(Kind::Service, None).await?;
        let skip = (
            new.metadata.namespace.clone().unwrap_or_default(),
            new.metadata.name.clone().unwrap_or_default(),
        );
        let taken = Taken::from_services(&services, Some((&skip.0, &skip.1)));
        self.assign(new, old, &taken, &mut rand::rng())
            .map_err(AdmitError::Invalid)
    }

    /// The pure part of [`ServiceAllocator::admit`].
    pub fn assign(
        &self,
        new: &mut Service,
        old: Option<&Service>,
        taken: &Taken,
        rng: &mut impl Rng,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let type_ = service_type(&new.spec).to_string();
        let old_type = old.map(|o| service_type(&o.spec).to_string());
        let spec = &mut new.spec;
        if type_ == "ExternalName" {
            // No address: an ExternalName Service is a DNS alias.
            spec.cluster_ip = None;
            spec.cluster_ips.clear();
        } else {
            let old_ip = old
                .filter(|_| old_type.as_deref() != Some("ExternalName"))
                .and_then(|o| o.spec.cluster_ip.clone())
                .filter(|ip| !ip.is_empty());
            if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
                spec.cluster_ip = old_ip.clone().or_else(|| spec.cluster_ips.first().cloned());
            }
            let requested = spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
            match requested.as_deref() {
                Some("None") => {}
                Some(ip) if Some(ip) == old_ip.as_deref() => {}
                Some(ip) => {
                    // An unparsable address: validation already said why.
                    if let Ok(addr) = ip.parse::<Ipv4Addr>() {
                        if let Some(message) = self.ip_problem(addr, taken) {
                            errors.push(FieldError::invalid(
                                "spec.clusterIPs",
                                ip,
                                format!("failed to allocate IP {ip}: {message}"),
                            ));
                        }
                    }
                }
                None => match self.free_ip(taken, rng) {
                    Some(addr) => spec.cluster_ip = Some(addr.to_string()),
                    None => errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        "",
                        format!(
                            "failed to allocate a service IP: range is full ({}); delete unused Services or start the master with a larger --service-cidr",
                            self.cidr
                        ),
                    )),
                },
            }
            if let Some(ip) = spec.cluster_ip.clone() {
                spec.cluster_ips = vec![ip];
            }
        }
        let wants_node_ports = match type_.as_str() {
            "NodePort" => true,
            "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
            _ => false,
        };
        // Ports this Service itself holds: the same number may serve TCP
        // and UDP of one Service.
        let mut own: BTreeMap<u16, ()> = BTreeMap::new();
        let old_ports: Vec<(i64, String, i64)> = old
            .map(|o| {
                o.spec
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p.port,
                            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            p.node_port.filter(|n| *n != 0)?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let old_node_ports: BTreeSet<i64> = old_ports.iter().map(|(_, _, n)| *n).collect();
        for (i, port) in spec.ports.iter_mut().enumerate() {
            let path = format!("spec.ports[{i}].nodePort");
            if !matches!(type_.as_str(), "NodePort" | "LoadBalancer") {
                port.node_port = None;
                continue;
            }
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            if port.node_port.unwrap_or(0) == 0 {
                // Keep what the old version had for this port.
                port.node_port = old_ports
                    .iter()
                    .find(|(p, proto, _)| *p == port.port && *proto == protocol)
                    .map(|(_, _, n)| *n);
            }
            match port.node_port.filter(|n| *n != 0) {
                Some(requested) => {
                    let number = u16::try_from(requested).unwrap_or(0);
                    if own.contains_key(&number) || old_node_ports.contains(&requested) {
                        own.insert(number, ());
                        continue;
                    }
                    if !self.node_ports.contains(&number) {
                        errors.push(FieldError::invalid(
                            path,
                            requested,
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                self.node_ports.start(),
                                self.node_ports.end()
                            ),
                        ));
                    } else if taken.node_ports.contains(&number) {
                        errors.push(FieldError::invalid(
                            path,
                            requested,
                            "provided port is already allocated",
                        ));
                    } else {
                        own.insert(number, ());
                    }
                }
                None if wants_node_ports => {
                    let start = u64::from(*self.node_ports.start());
                    let size = u64::from(*self.node_ports.end()) - start + 1;
                    let free = pick_free(
                        size,
                        |offset| {
                            let n = (start + offset) as u16;
                            taken.node_ports.contains(&n) || own.contains_key(&n)
                        },
                        rng,
                    );
                    match free {
                        Some(offset) => {
                            let n = (start + offset) as u16;
                            own.insert(n, ());
                            port.node_port = Some(i64::from(n));
                        }
                        None => errors.push(FieldError::invalid(
                            path,
                            0,
                            format!(
                                "failed to allocate a node port: range {}-{} is full; delete unused NodePort Services or widen --service-node-port-range",
                                self.node_ports.start(),
                                self.node_ports.end()
                            ),
                        )),
                    }
                }
                None => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Why `addr` cannot be given out, or `None` if it can.
    fn ip_problem(&self, addr: Ipv4Addr, taken: &Taken) -> Option<String> {
        let network = self.cidr.network();
        let broadcast = self.cidr.broadcast();
        if !self.cidr.contains(&addr) || addr == network || addr == broadcast {
            return Some(format!(
                "the provided IP ({addr}) is not in the valid range. The range of valid IPs is {}",
                self.cidr
            ));
        }
        if taken.ips.contains(&addr) {
            return Some("provided IP is already allocated".into());
        }
        None
    }

    /// A random free address of the range (upper band first).
    fn free_ip(&self, taken: &Taken, rng: &mut impl Rng) -> Option<Ipv4Addr> {
        let network = u32::from(self.cidr.network());
        // Usable: network+1 ..= broadcast-1.
        let size = u64::from(u32::from(self.cidr.broadcast()) - network).saturating_sub(1);
        let kubernetes = self.kubernetes_ip();
        pick_free(
            size,
            |offset| {
                let addr = Ipv4Addr::from(network + 1 + offset as u32);
                addr == kubernetes || taken.ips.contains(&addr)
            },
            rng,
        )
        .map(|offset| Ipv4Addr::from(network + 1 + offset as u32))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bramble_common::api::ServicePort;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    fn service(type_: &str, ip: Option<&str>, node_port: Option<i64>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("default".into());
        s.spec.type_ = Some(type_.into());
        s.spec.cluster_ip = ip.map(str::to_string);
        s.spec.ports = vec![ServicePort {
            port: 80,
            protocol: Some("TCP".into()),
            node_port,
            ..Default::default()
        }];
        s
    }

    #[test]
    fn dynamic_addresses_avoid_the_static_band_and_each_other() {
        let alloc = ServiceAllocator::new("10.96.0.0/16", "30000-32767").unwrap();
        let mut taken = Taken::default();
        let mut rng = rng();
        for _ in 0..500 {
            let mut svc = service("ClusterIP", None, None);
            alloc.assign(&mut svc, None, &taken, &mut rng).unwrap();
            let ip: Ipv4Addr = svc.spec.cluster_ip.clone().unwrap().parse().unwrap();
            assert!(
                u32::from(ip) - u32::from(Ipv4Addr::new(10, 96, 0, 0)) > 256,
                "{ip} in the static band"
            );
            assert_eq!(svc.spec.cluster_ips, vec![ip.to_string()]);
            assert!(taken.ips.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(alloc.kubernetes_ip(), Ipv4Addr::new(10, 96, 0, 1));
    }

    #[test]
    fn a_small_range_fills_up_then_refuses() {
        let alloc = ServiceAllocator::new("10.96.0.0/28", "30000-30001").unwrap();
        let mut taken = Taken::default();
        let mut rng = rng();
        // 14 usable hosts, one of them the kubernetes Service's.
        for _ in 0..13 {
            let mut svc = service("ClusterIP", None, None);
            alloc.assign(&mut svc, None, &taken, &mut rng).unwrap();
            assert!(taken
                .ips
                .insert(svc.spec.cluster_ip.unwrap().parse().unwrap()));
        }
        let mut svc = service("ClusterIP", None, None);
        let errors = alloc.assign(&mut svc, None, &taken, &mut rng).unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .contains("range is full (10.96.0.0/28)"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn requested_addresses_are_honoured_or_refused_like_kubernetes() {
        let alloc = ServiceAllocator::new("10.96.0.0/16", "30000-32767").unwrap();
        let mut taken = Taken::default();
        taken.ips.insert(Ipv4Addr::new(10, 96, 0, 10));
        let mut ok = service("ClusterIP", Some("10.96.0.11"), None);
        alloc.assign(&mut ok, None, &taken, &mut rng()).unwrap();
        assert_eq!(ok.spec.cluster_ip.as_deref(), Some("10.96.0.11"));
        let mut dup = service("ClusterIP", Some("10.96.0.10"), None);
        let errors = alloc
            .assign(&mut dup, None, &taken, &mut rng())
            .unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.clusterIPs: Invalid value: \"10.96.0.10\": failed to allocate IP 10.96.0.10: provided IP is already allocated"
        );
        let mut outside = service("ClusterIP", Some("10.97.0.5"), None);
        let errors = alloc
            .assign(&mut outside, None, &taken, &mut rng())
            .unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.clusterIPs: Invalid value: \"10.97.0.5\": failed to allocate IP 10.97.0.5: the provided IP (10.97.0.5) is not in the valid range. The range of valid IPs is 10.96.0.0/16"
        );
        let mut headless = service("ClusterIP", Some("None"), None);
        alloc
            .assign(&mut headless, None, &taken, &mut rng())
            .unwrap();
        assert_eq!(headless.spec.cluster_ips, vec!["None".to_string()]);
    }

    #[test]
    fn node_ports_are_allocated_checked_and_kept() {
        let alloc = ServiceAllocator::new("10.96.0.0/16", "30000-32767").unwrap();
        let mut taken = Taken::default();
        taken.node_ports.insert(30080);
        let mut svc = service("NodePort", None, None);
        alloc.assign(&mut svc, None, &taken, &mut rng()).unwrap();
        let np = svc.spec.ports[0].node_port.unwrap();
        assert!((30000..=32767).contains(&np) && np != 30080);
        let mut dup = service("NodePort", None, Some(30080));
        let errors = alloc
            .assign(&mut dup, None, &taken, &mut rng())
            .unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        let mut outside = service("NodePort", None, Some(8080));
        let errors = alloc
            .assign(&mut outside, None, &taken, &mut rng())
            .unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        // An update that omits the address and the port keeps both.
        let mut update = service("NodePort", None, None);
        alloc
            .assign(&mut update, Some(&svc), &taken, &mut rng())
            .unwrap();
        assert_eq!(update.spec.cluster_ip, svc.spec.cluster_ip);
        assert_eq!(update.spec.ports[0].node_port, Some(np));
        // ClusterIP again: the NodePort is released.
        let mut back = service("ClusterIP", None, Some(np));
        alloc
            .assign(&mut back, Some(&svc), &taken, &mut rng())
            .unwrap();
        assert_eq!(back.spec.ports[0].node_port, None);
    }

    #[test]
    fn external_name_has_no_address_and_load_balancers_get_node_ports() {
        let alloc = ServiceAllocator::new("10.96.0.0/16", "30000-32767").unwrap();
        let mut en = service("ExternalName", Some("10.96.5.5"), None);
        alloc
            .assign(&mut en, None, &Taken::default(), &mut rng())
            .unwrap();
        assert_eq!(en.spec.cluster_ip, None);
        let mut lb = service("LoadBalancer", None, None);
        alloc
            .assign(&mut lb, None, &Taken::default(), &mut rng())
            .unwrap();
        assert!(lb.spec.ports[0].node_port.is_some() && lb.spec.cluster_ip.is_some());
        let mut lb_no_ports = service("LoadBalancer", None, None);
        lb_no_ports.spec.allocate_load_balancer_node_ports = Some(false);
        alloc
            .assign(&mut lb_no_ports, None, &Taken::default(), &mut rng())
            .unwrap();
        assert_eq!(lb_no_ports.spec.ports[0].node_port, None);
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(ServiceAllocator::new("10.96.0.0/30", "30000-32767").is_err());
        assert!(ServiceAllocator::new("nonsense", "30000-32767").is_err());
        assert!(parse_port_range("32767-30000").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert_eq!(parse_port_range("30000-32767").unwrap(), 30000..=32767);
    }
}

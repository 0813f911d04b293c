//! The service proxy: ClusterIP, NodePort and LoadBalancer Services on
//! nftables, in kube-proxy's nftables-mode structure (KEP-3866), in a table
//! of the agent's own (`ip bramble-svc-{node}` by default; the pod network's
//! table `bramble-{node}` is a different one, so neither rewrite touches the
//! other).
//!
//! ```text
//! nat-prerouting / nat-output ─ jump services
//!   services: ip daddr . meta l4proto . th dport vmap @service-ips
//!             ip daddr != 127.0.0.0/8 fib daddr type local
//!                 meta l4proto . th dport vmap @service-nodeports
//!   service-…-ns/name/tcp/port: off-cluster source -> mark-for-masquerade,
//!             ClientIP affinity (ip saddr @affinity-… goto endpoint-…),
//!             numgen random mod N vmap { 0 : goto endpoint-…, … }
//!   external-…: what a NodePort or load-balancer address reaches
//!             (Cluster policy: masquerade, then the service chain;
//!              Local policy: this node's endpoints, source kept)
//!   endpoint-…__ip/port: hairpin -> mark-for-masquerade, dnat to ip:port
//! nat-postrouting ─ masquerading: packets with the mark are masqueraded
//! filter-input/forward/output ─ new connections to a Service without
//!   endpoints hit @no-endpoint-services / @no-endpoint-nodeports: reject
//!   (Kubernetes' behaviour: the client sees "connection refused" at once),
//!   a cluster IP on a port no Service has: reject
//! ```
//!
//! [`render`] is pure: the whole table from the Services, this node's name,
//! and what the node knows about its own pods ([`LocalPods`]: their
//! readiness from the node's probes overrides the master's view, so with
//! the uplink down the node still routes to its ready local pods and not
//! to the ones that failed). The script declares the table, deletes it and
//! declares it again, so `nft -f` applies it as one transaction: a script
//! the kernel refuses leaves the previous rules in place.
//!
//! Endpoint choice per Service port follows kube-proxy's topology rules:
//! ready endpoints, or when none is ready the serving terminating ones;
//! `internalTrafficPolicy: Local` keeps this node's for the cluster IP
//! (none: dropped, as kube-proxy does), `externalTrafficPolicy: Local` keeps
//! this node's for NodePorts and load-balancer addresses and the client's
//! address, `trafficDistribution: PreferSameNode`/`PreferClose` uses this
//! node's when it has any.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use bramble_common::wire::{WireEndpoint, WireService, WireServicePort, WireServiceType};
use ipnet::Ipv4Net;

/// The packet mark bit that asks `nat-postrouting` to masquerade (the bit
/// kube-proxy uses).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// What the proxy's table is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The table's name (family `ip`).
    pub table: String,
    /// This node's name (endpoints with this `nodeName` are local).
    pub node: String,
    /// The cluster's pod CIDR: traffic from elsewhere to a cluster IP is
    /// masqueraded so that the reply comes back through this node.
    pub cluster_cidr: Ipv4Net,
    /// The cluster DNS Service's address (`10.96.0.10`) and the node-local
    /// DNS server it reaches instead of its (absent) pods.
    pub dns: Option<DnsRedirect>,
}

/// The cluster DNS Service, answered by the node's own DNS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsRedirect {
    /// The Service's cluster IP.
    pub service_ip: Ipv4Addr,
    /// Where the node's DNS server listens (port 53, UDP and TCP).
    pub local: Ipv4Addr,
}

/// This node's own pods as its probes see them: pod IP -> ready.
pub type LocalPods = HashMap<Ipv4Addr, bool>;

/// The table name for node `node_id` (characters nft does not accept
/// become `-`).
pub fn table_name(node_id: &str) -> String {
    let id: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("bramble-svc-{id}")
}

/// One endpoint of one Service port, as the rules use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    address: Ipv4Addr,
    port: u16,
}

/// An endpoint with its readiness as this node sees it.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    target: Target,
    local: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// kube-proxy's choice: the ready ones; when none, the serving
/// terminating ones (so a rolling update does not drop connections).
fn usable<'a>(candidates: impl Iterator<Item = &'a Candidate> + Clone) -> Vec<Target> {
    let ready: Vec<Target> = candidates
        .clone()
        .filter(|c| c.ready)
        .map(|c| c.target)
        .collect();
    if !ready.is_empty() {
        return dedup(ready);
    }
    dedup(
        candidates
            .filter(|c| c.serving && c.terminating)
            .map(|c| c.target)
            .collect(),
    )
}

fn dedup(mut targets: Vec<Target>) -> Vec<Target> {
    targets.sort();
    targets.dedup();
    targets
}

/// Characters allowed in chain names besides alphanumerics (what nft's
/// scanner takes in an unquoted identifier).
fn clean(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

/// 8 hex digits of FNV-1a of `text`: keeps chain names unique after
/// [`clean`] and truncation.
fn short_hash(text: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// The names of one Service port's chains.
struct PortNames {
    /// `ns/name/proto/port`, the readable part.
    base: String,
    hash: String,
}

impl PortNames {
    fn new(service: &WireService, port: &WireServicePort, index: usize) -> PortNames {
        let port_name = if port.name.is_empty() {
            format!("p{index}")
        } else {
            clean(&port.name)
        };
        let base = format!(
            "{}/{}/{}/{}",
            clean(&service.namespace),
            clean(&service.name),
            port.protocol.as_lower(),
            port_name
        );
        let hash = short_hash(&format!(
            "{}/{}/{}/{}/{}",
            service.namespace,
            service.name,
            port.protocol.as_lower(),
            port.name,
            port.port
        ));
        PortNames { base, hash }
    }

    fn service(&self) -> String {
        format!("service-{}-{}", self.hash, self.base)
    }

    fn external(&self) -> String {
        format!("external-{}-{}", self.hash, self.base)
    }

    fn local(&self) -> String {
        format!("local-{}-{}", self.hash, self.base)
    }

    fn endpoint(&self, target: Target) -> String {
        format!(
            "endpoint-{}-{}__{}/{}",
            self.hash, self.base, target.address, target.port
        )
    }

    fn affinity(&self, target: Target) -> String {
        format!(
            "affinity-{}-{}__{}/{}",
            self.hash, self.base, target.address, target.port
        )
    }
}

/// Everything the table holds, collected before it is written.
#[derive(Default)]
struct Table {
    /// `service-ips` elements: `daddr . proto . port : verdict`.
    service_ips: Vec<String>,
    /// `service-nodeports` elements: `proto . port : verdict`.
    service_nodeports: Vec<String>,
    /// `no-endpoint-services` elements.
    no_endpoint_services: Vec<String>,
    /// `no-endpoint-nodeports` elements.
    no_endpoint_nodeports: Vec<String>,
    /// The cluster IPs.
    cluster_ips: BTreeSet<Ipv4Addr>,
    /// Affinity sets: name -> timeout seconds.
    affinity_sets: BTreeMap<String, u32>,
    /// Chains: name -> rules (ordered map: a deterministic script).
    chains: BTreeMap<String, Vec<String>>,
}

/// The `nft -f` script that replaces the proxy's table with the rules for
/// `services` (in any order) on this node.
pub fn render(config: &ProxyConfig, services: &[WireService], local: &LocalPods) -> String {
    let mut table = Table::default();
    let mut sorted: Vec<&WireService> = services.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for service in sorted {
        add_service(&mut table, config, service, local);
    }
    write_table(config, &table)
}

/// The script that removes the proxy's table if it exists.
pub fn render_delete(table: &str) -> String {
    super::nft::render_delete(table)
}

fn candidates(
    config: &ProxyConfig,
    service: &WireService,
    index: usize,
    local: &LocalPods,
) -> Vec<Candidate> {
    if let (Some(dns), Ok(ip)) = (config.dns, service.cluster_ip.parse::<Ipv4Addr>()) {
        if ip == dns.service_ip {
            // The cluster DNS Service: answered by this node's own server.
            return vec![Candidate {
                target: Target {
                    address: dns.local,
                    port: 53,
                },
                local: true,
                ready: true,
                serving: true,
                terminating: false,
            }];
        }
    }
    service
        .endpoints
        .iter()
        .filter_map(|endpoint| candidate(config, endpoint, index, local))
        .collect()
}

fn candidate(
    config: &ProxyConfig,
    endpoint: &WireEndpoint,
    index: usize,
    local: &LocalPods,
) -> Option<Candidate> {
    let port = endpoint.ports.get(index).copied().filter(|p| *p != 0)?;
    let address: Ipv4Addr = endpoint.address.parse().ok()?;
    let own = local.get(&address).copied();
    let (ready, serving) = match own {
        // This node's probes know better than the master (whose view may
        // be stale, or say "not ready" because the uplink is down).
        Some(ready) => (ready && !endpoint.terminating, ready),
        None => (endpoint.ready, endpoint.serving),
    };
    Some(Candidate {
        target: Target { address, port },
        local: own.is_some() || endpoint.node == config.node,
        ready,
        serving,
        terminating: endpoint.terminating,
    })
}

fn add_service(table: &mut Table, config: &ProxyConfig, service: &WireService, local: &LocalPods) {
    if matches!(
        service.type_,
        WireServiceType::Headless | WireServiceType::ExternalName
    ) {
        return;
    }
    let Ok(cluster_ip) = service.cluster_ip.parse::<Ipv4Addr>() else {
        return;
    };
    table.cluster_ips.insert(cluster_ip);
    let load_balancer_ips: Vec<Ipv4Addr> = if service.type_ == WireServiceType::LoadBalancer {
        service
            .load_balancer_ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    for (index, port) in service.ports.iter().enumerate() {
        if port.port == 0 {
            continue;
        }
        let names = PortNames::new(service, port, index);
        let proto = port.protocol.as_lower();
        let all = candidates(config, service, index, local);
        let local_only = usable(all.iter().filter(|c| c.local));
        let cluster =
            if service.internal_local || (service.prefer_same_node && !local_only.is_empty()) {
                local_only.clone()
            } else {
                usable(all.iter())
            };
        let external = if service.external_local {
            local_only.clone()
        } else {
            usable(all.iter())
        };
        let service_key = format!("{cluster_ip} . {proto} . {}", port.port);
        if cluster.is_empty() {
            // No endpoint at all: reject (the client sees a refusal at
            // once). None on this node under a Local policy: dropped.
            let verdict = if service.internal_local && !usable(all.iter()).is_empty() {
                "drop"
            } else {
                "goto reject-chain"
            };
            table
                .no_endpoint_services
                .push(format!("{service_key} : {verdict}"));
        } else {
            table
                .service_ips
                .push(format!("{service_key} : goto {}", names.service()));
            let mut rules = vec![format!(
                "ip daddr {cluster_ip} {proto} dport {} ip saddr != {} jump mark-for-masquerade",
                port.port,
                config.cluster_cidr.trunc()
            )];
            rules.extend(balance(
                table,
                service.affinity_timeout_seconds,
                proto,
                &names,
                &cluster,
            ));
            table.chains.insert(names.service(), rules);
        }
        let external_entry = port.node_port != 0 || !load_balancer_ips.is_empty();
        if !external_entry {
            continue;
        }
        if external.is_empty() {
            let verdict = "goto reject-chain";
            if port.node_port != 0 {
                table
                    .no_endpoint_nodeports
                    .push(format!("{proto} . {} : {verdict}", port.node_port));
            }
            for ip in &load_balancer_ips {
                table
                    .no_endpoint_services
                    .push(format!("{ip} . {proto} . {} : {verdict}", port.port));
            }
            continue;
        }
        let rules = if service.external_local {
            // Pods and the node itself still reach every endpoint, as
            // kube-proxy's short-circuit does; outside clients keep their
            // address and reach this node's endpoints only.
            let mut rules = Vec::new();
            if !cluster.is_empty() {
                rules.push(format!(
                    "ip saddr {} goto {}",
                    config.cluster_cidr.trunc(),
                    names.service()
                ));
                rules.push("fib saddr type local jump mark-for-masquerade".to_string());
                rules.push(format!("fib saddr type local goto {}", names.service()));
            }
            let local_rules = balance(
                table,
                service.affinity_timeout_seconds,
                proto,
                &names,
                &external,
            );
            table.chains.insert(names.local(), local_rules);
            rules.push(format!("goto {}", names.local()));
            rules
        } else if cluster.is_empty() {
            vec!["goto reject-chain".to_string()]
        } else {
            vec![
                "jump mark-for-masquerade".to_string(),
                format!("goto {}", names.service()),
            ]
        };
        table.chains.insert(names.external(), rules);
        if port.node_port != 0 {
            table.service_nodeports.push(format!(
                "{proto} . {} : goto {}",
                port.node_port,
                names.external()
            ));
        }
        for ip in &load_balancer_ips {
            table.service_ips.push(format!(
                "{ip} . {proto} . {} : goto {}",
                port.port,
                names.external()
            ));
        }
    }
}

/// The rules that pick one of `targets` (affinity first, then `numgen`),
/// creating the endpoint chains (and affinity sets) they jump to.
fn balance(
    table: &mut Table,
    affinity: u32,
    proto: &str,
    names: &PortNames,
    targets: &[Target],
) -> Vec<String> {
    let mut rules = Vec::new();
    for target in targets {
        let chain = names.endpoint(*target);
        if table.chains.contains_key(&chain) {
            continue;
        }
        let mut endpoint_rules = vec![format!(
            "ip saddr {} jump mark-for-masquerade",
            target.address
        )];
        if affinity > 0 {
            let set = names.affinity(*target);
            endpoint_rules.push(format!("update @{set} {{ ip saddr }}"));
            table.affinity_sets.insert(set, affinity);
        }
        endpoint_rules.push(format!(
            "meta l4proto {proto} dnat to {}:{}",
            target.address, target.port
        ));
        table.chains.insert(chain, endpoint_rules);
    }
    if affinity > 0 {
        for target in targets {
            rules.push(format!(
                "ip saddr @{} goto {}",
                names.affinity(*target),
                names.endpoint(*target)
            ));
        }
    }
    match targets {
        [] => rules.push("goto reject-chain".to_string()),
        [one] => rules.push(format!("goto {}", names.endpoint(*one))),
        many => {
            let arms: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i} : goto {}", names.endpoint(*t)))
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                many.len(),
                arms.join(", ")
            ));
        }
    }
    rules
}

fn write_map(out: &mut String, name: &str, type_: &str, elements: &[String]) {
    let _ = writeln!(out, "\tmap {name} {{\n\t\ttype {type_} : verdict");
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    out.push_str("\t}\n");
}

fn write_chain(out: &mut String, name: &str, hook: Option<&str>, rules: &[String]) {
    let _ = writeln!(out, "\tchain {name} {{");
    if let Some(hook) = hook {
        let _ = writeln!(out, "\t\t{hook}");
    }
    for rule in rules {
        let _ = writeln!(out, "\t\t{rule}");
    }
    out.push_str("\t}\n");
}

fn write_table(config: &ProxyConfig, table: &Table) -> String {
    let t = &config.table;
    let mut out = format!("table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n");
    write_map(
        &mut out,
        "service-ips",
        "ipv4_addr . inet_proto . inet_service",
        &table.service_ips,
    );
    write_map(
        &mut out,
        "service-nodeports",
        "inet_proto . inet_service",
        &table.service_nodeports,
    );
    write_map(
        &mut out,
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service",
        &table.no_endpoint_services,
    );
    write_map(
        &mut out,
        "no-endpoint-nodeports",
        "inet_proto . inet_service",
        &table.no_endpoint_nodeports,
    );
    let _ = writeln!(out, "\tset cluster-ips {{\n\t\ttype ipv4_addr");
    if !table.cluster_ips.is_empty() {
        let ips: Vec<String> = table.cluster_ips.iter().map(|ip| ip.to_string()).collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", ips.join(", "));
    }
    out.push_str("\t}\n");
    for (name, timeout) in &table.affinity_sets {
        let _ = writeln!(
            out,
            "\tset {name} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}"
        );
    }
    let mark = MASQUERADE_MARK;
    write_chain(
        &mut out,
        "mark-for-masquerade",
        None,
        &[format!("meta mark set meta mark | {mark:#x}")],
    );
    write_chain(
        &mut out,
        "masquerading",
        None,
        &[
            format!("meta mark & {mark:#x} == 0 return"),
            format!("meta mark set meta mark ^ {mark:#x}"),
            "masquerade fully-random".to_string(),
        ],
    );
    write_chain(&mut out, "reject-chain", None, &["reject".to_string()]);
    write_chain(
        &mut out,
        "services",
        None,
        &[
            "ip daddr . meta l4proto . th dport vmap @service-ips".to_string(),
            "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports".to_string(),
        ],
    );
    write_chain(
        &mut out,
        "service-endpoints-check",
        None,
        &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services".to_string()],
    );
    write_chain(
        &mut out,
        "nodeport-endpoints-check",
        None,
        &[
            "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports"
                .to_string(),
        ],
    );
    write_chain(
        &mut out,
        "cluster-ips-check",
        None,
        &["ip daddr @cluster-ips reject".to_string()],
    );
    write_chain(
        &mut out,
        "nat-prerouting",
        Some("type nat hook prerouting priority dstnat; policy accept;"),
        &["jump services".to_string()],
    );
    write_chain(
        &mut out,
        "nat-output",
        Some("type nat hook output priority -100; policy accept;"),
        &["jump services".to_string()],
    );
    write_chain(
        &mut out,
        "nat-postrouting",
        Some("type nat hook postrouting priority srcnat; policy accept;"),
        &["jump masquerading".to_string()],
    );
    write_chain(
        &mut out,
        "filter-input",
        Some("type filter hook input priority -110; policy accept;"),
        &[
            "ct state new jump nodeport-endpoints-check".to_string(),
            "ct state new jump service-endpoints-check".to_string(),
        ],
    );
    write_chain(
        &mut out,
        "filter-forward",
        Some("type filter hook forward priority -110; policy accept;"),
        &[
            "ct state new jump service-endpoints-check".to_string(),
            "ct state new jump cluster-ips-check".to_string(),
        ],
    );
    write_chain(
        &mut out,
        "filter-output",
        Some("type filter hook output priority -110; policy accept;"),
        &["ct state new jump service-endpoints-check".to_string()],
    );
    // After nat-output: a connection DNATed to an endpoint no longer has
    // a cluster IP as its destination.
    write_chain(
        &mut out,
        "filter-output-post-dnat",
        Some("type filter hook output priority -90; policy accept;"),
        &["ct state new jump cluster-ips-check".to_string()],
    );
    for (name, rules) in &table.chains {
        write_chain(&mut out, name, None, rules);
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bramble_common::wire::WireProtocol;

    fn config() -> ProxyConfig {
        ProxyConfig {
            table: table_name("n1"),
            node: "n1".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            dns: Some(DnsRedirect {
                service_ip: "10.96.0.10".parse().unwrap(),
                local: "10.244.1.1".parse().unwrap(),
            }),
        }
    }

    fn endpoint(address: &str, node: &str, ready: bool, port: u16) -> WireEndpoint {
        WireEndpoint {
            address: address.into(),
            node: node.into(),
            ready,
            serving: ready,
            ports: vec![port],
            ..WireEndpoint::default()
        }
    }

    fn web(endpoints: Vec<WireEndpoint>) -> WireService {
        WireService {
            namespace: "default".into(),
            name: "web".into(),
            type_: WireServiceType::NodePort,
            cluster_ip: "10.96.0.20".into(),
            ports: vec![WireServicePort {
                name: "http".into(),
                protocol: WireProtocol::Tcp,
                port: 80,
                node_port: 30080,
            }],
            endpoints,
            ..WireService::default()
        }
    }

    /// The first per-Service chain named `{prefix}{hash}-...`.
    fn chain<'a>(script: &'a str, prefix: &str) -> &'a str {
        let needle = format!("\tchain {prefix}");
        let start = script
            .match_indices(&needle)
            .map(|(i, _)| i)
            .find(|&i| {
                let name = &script[i + needle.len()..];
                name.len() > 9
                    && name[..8].bytes().all(|b| b.is_ascii_hexdigit())
                    && name.as_bytes()[8] == b'-'
            })
            .unwrap_or_else(|| panic!("no chain {prefix} in\n{script}"));
        let rest = &script[start..];
        &rest[..rest.find("\n\t}\n").unwrap()]
    }

    #[test]
    fn a_service_balances_over_its_ready_endpoints() {
        let script = render(
            &config(),
            &[web(vec![
                endpoint("10.244.1.5", "n1", true, 8080),
                endpoint("10.244.2.7", "n2", true, 8080),
                endpoint("10.244.2.8", "n2", false, 8080),
            ])],
            &LocalPods::new(),
        );
        assert!(script.starts_with(
            "table ip bramble-svc-n1\ndelete table ip bramble-svc-n1\ntable ip bramble-svc-n1 {\n"
        ));
        assert!(
            script.contains("10.96.0.20 . tcp . 80 : goto service-"),
            "{script}"
        );
        assert!(script.contains("tcp . 30080 : goto external-"), "{script}");
        let service = chain(&script, "service-");
        assert!(service.contains("default/web/tcp/http"), "{service}");
        assert!(
            service.contains("ip daddr 10.96.0.20 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"),
            "{service}"
        );
        assert!(
            service.contains("numgen random mod 2 vmap { 0 : goto endpoint-"),
            "{service}"
        );
        assert!(
            !script.contains("10.244.2.8"),
            "the unready endpoint is left out"
        );
        let endpoint = chain(&script, "endpoint-");
        assert!(endpoint.contains("ip saddr 10.244.1.5 jump mark-for-masquerade"));
        assert!(endpoint.contains("meta l4proto tcp dnat to 10.244.1.5:8080"));
        let external = chain(&script, "external-");
        assert!(external.contains("jump mark-for-masquerade"));
        assert!(script.contains(
            "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports"
        ));
    }

    #[test]
    fn no_endpoints_are_rejected_not_dropped() {
        let script = render(&config(), &[web(vec![])], &LocalPods::new());
        assert!(
            script.contains("10.96.0.20 . tcp . 80 : goto reject-chain"),
            "{script}"
        );
        assert!(
            script.contains("tcp . 30080 : goto reject-chain"),
            "{script}"
        );
        assert!(!script.contains("default/web/tcp/http {"), "{script}");
    }

    #[test]
    fn local_readiness_overrides_the_masters_view() {
        // The master says 10.244.1.5 (on this node) is not ready, e.g.
        // because the node's uplink is down; its probes say ready.
        let service = web(vec![
            endpoint("10.244.1.5", "n1", false, 8080),
            endpoint("10.244.1.6", "n1", true, 8080),
        ]);
        let local: LocalPods = [
            ("10.244.1.5".parse().unwrap(), true),
            ("10.244.1.6".parse().unwrap(), false),
        ]
        .into();
        let script = render(&config(), &[service], &local);
        assert!(script.contains("dnat to 10.244.1.5:8080"));
        assert!(!script.contains("10.244.1.6"), "{script}");
    }

    #[test]
    fn traffic_policies_and_affinity() {
        let mut service = web(vec![
            endpoint("10.244.1.5", "n1", true, 8080),
            endpoint("10.244.2.7", "n2", true, 8080),
        ]);
        service.external_local = true;
        service.affinity_timeout_seconds = 60;
        let script = render(&config(), &[service.clone()], &LocalPods::new());
        let local = chain(&script, "local-");
        assert!(local.contains("goto endpoint-"), "{local}");
        assert!(local.contains("10.244.1.5"), "{local}");
        assert!(!local.contains("10.244.2.7"), "{local}");
        assert!(
            script.contains("flags dynamic,timeout\n\t\ttimeout 60s"),
            "{script}"
        );
        assert!(script.contains("update @affinity-"), "{script}");
        assert!(chain(&script, "service-").contains("ip saddr @affinity-"));

        service.external_local = false;
        service.internal_local = true;
        service.endpoints.remove(0);
        let script = render(&config(), &[service.clone()], &LocalPods::new());
        assert!(script.contains("10.96.0.20 . tcp . 80 : drop"), "{script}");

        service.internal_local = false;
        service.prefer_same_node = true;
        service.endpoints = vec![
            endpoint("10.244.1.5", "n1", true, 8080),
            endpoint("10.244.2.7", "n2", true, 8080),
        ];
        let script = render(&config(), &[service], &LocalPods::new());
        let chain = chain(&script, "service-");
        assert!(chain.contains("goto endpoint-") && chain.contains("10.244.1.5"));
        assert!(!chain.contains("numgen"), "{chain}");
    }

    #[test]
    fn cluster_dns_goes_to_the_node_local_server() {
        let dns = WireService {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
            cluster_ip: "10.96.0.10".into(),
            ports: vec![
                WireServicePort {
                    name: "dns".into(),
                    protocol: WireProtocol::Udp,
                    port: 53,
                    node_port: 0,
                },
                WireServicePort {
                    name: "dns-tcp".into(),
                    protocol: WireProtocol::Tcp,
                    port: 53,
                    node_port: 0,
                },
            ],
            ..WireService::default()
        };
        let script = render(&config(), &[dns], &LocalPods::new());
        assert!(
            script.contains("meta l4proto udp dnat to 10.244.1.1:53"),
            "{script}"
        );
        assert!(
            script.contains("meta l4proto tcp dnat to 10.244.1.1:53"),
            "{script}"
        );
        assert!(script.contains("10.96.0.10 . udp . 53 : goto service-"));
    }

    #[test]
    fn headless_external_name_and_load_balancer() {
        let mut headless = web(vec![endpoint("10.244.1.5", "n1", true, 8080)]);
        headless.type_ = WireServiceType::Headless;
        headless.cluster_ip = String::new();
        let script = render(&config(), &[headless], &LocalPods::new());
        assert!(!script.contains("10.244.1.5"));
        let mut lb = web(vec![endpoint("10.244.1.5", "n1", true, 8080)]);
        lb.type_ = WireServiceType::LoadBalancer;
        lb.load_balancer_ips = vec!["192.168.77.10".into(), "not an ip".into()];
        let script = render(&config(), &[lb], &LocalPods::new());
        assert!(
            script.contains("192.168.77.10 . tcp . 80 : goto external-"),
            "{script}"
        );
    }

    #[test]
    fn hostile_names_stay_inside_chain_names() {
        let mut service = web(vec![endpoint("10.244.1.5", "n1", true, 8080)]);
        service.name = "we b; flush ruleset".into();
        let script = render(&config(), &[service], &LocalPods::new());
        assert!(!script.contains("; flush"), "{script}");
        assert!(script.contains("we_b__flush_ruleset"));
    }
}

//! [`NetlinkNetwork`]: the real [`PodNetwork`], through rtnetlink and nftables.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::ipam::{gateway_of, IpamStore, IPAM_FILE};
use super::names::{is_veth_host_name, valid_ifname, veth_host_name};
use super::netns::{delete_netns, with_netlink};
use super::nft::{self, NftRules, PortMapping};
use super::state::write_atomic;
use super::{
    HostPort, MtuSource, NetworkError, NodeNetConfig, NodeNetState, Peer, PodNetStatus, PodNetwork,
    RouteChanges, DEFAULT_BRIDGE, ROUTE_PROTOCOL,
};

/// File (in the state directory) with the published host ports of each pod.
const HOST_PORTS_FILE: &str = "hostports.json";
/// File (in the state directory) with `ip_forward` as it was before bramble.
const IP_FORWARD_ORIG_FILE: &str = "ip_forward.orig";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const ENODEV: i32 = 19;
const ESRCH: i32 = 3;
/// Interface name of the pod end of the veth.
const POD_IFNAME: &str = "eth0";

/// Where and under which names [`NetlinkNetwork`] works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOptions {
    /// The agent's state directory (`ipam.json`, `hostports.json`).
    pub state_dir: PathBuf,
    /// The directory of pod namespace files (`{run_dir}/netns`), emptied by
    /// [`PodNetwork::reset`]; `None` leaves namespaces alone.
    pub netns_dir: Option<PathBuf>,
    /// The bridge name.
    pub bridge_name: String,
    /// The nftables table name (family `ip`).
    pub nft_table: String,
    /// The `nft` binary.
    pub nft_binary: String,
    /// Do the node-side work inside this network namespace instead of the
    /// agent's own (tests simulate nodes as namespaces).
    pub node_netns: Option<PathBuf>,
}

impl NetworkOptions {
    /// Defaults for the node `node_id`: bridge `bramble0`, table
    /// `bramble-{node_id}` (characters nft does not accept become `-`),
    /// state in `state_dir`, no netns directory.
    pub fn new(state_dir: impl Into<PathBuf>, node_id: &str) -> Self {
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
        Self {
            state_dir: state_dir.into(),
            netns_dir: None,
            bridge_name: DEFAULT_BRIDGE.to_string(),
            nft_table: format!("bramble-{id}"),
            nft_binary: "nft".to_string(),
            node_netns: None,
        }
    }
}

/// What `ensure_node` established.
#[derive(Debug, Clone)]
struct NodeSetup {
    config: NodeNetConfig,
    mtu: u32,
}

#[derive(Debug, Default)]
struct Inner {
    node: Option<NodeSetup>,
    ipam: Option<IpamStore>,
    host_ports: Option<BTreeMap<String, Vec<HostPort>>>,
    peers: Option<Vec<Peer>>,
    /// The last script applied and `nft list table` right after it.
    nft_applied: Option<(String, String)>,
}

/// The real [`PodNetwork`]: rtnetlink for links, addresses and routes,
/// `nft -f -` for the nftables table. One operation at a time (a mutex);
/// each one runs its namespace work on short-lived threads.
#[derive(Debug)]
pub struct NetlinkNetwork {
    opts: NetworkOptions,
    inner: Mutex<Inner>,
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let op = op.into();
    move |source| NetworkError::Netlink { op, source }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> NetworkError + 'a {
    move |source| NetworkError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl NetlinkNetwork {
    /// A network with the given options; nothing is touched until
    /// [`PodNetwork::ensure_node`].
    pub fn new(opts: NetworkOptions) -> Result<Self, NetworkError> {
        if !valid_ifname(&opts.bridge_name) {
            return Err(NetworkError::InvalidConfig(format!(
                "bridge name {:?} is not a valid interface name (1-15 bytes)",
                opts.bridge_name
            )));
        }
        if !nft::valid_table_name(&opts.nft_table) {
            return Err(NetworkError::InvalidConfig(format!(
                "nftables table name {:?} must start with a letter and hold only letters, digits, '-' and '_'",
                opts.nft_table
            )));
        }
        Ok(Self {
            opts,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The options this network was made with.
    pub fn options(&self) -> &NetworkOptions {
        &self.opts
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves state that is re-read from
        // the kernel and disk on the next call: recover the guard.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn node_netns(&self) -> Option<&Path> {
        self.opts.node_netns.as_deref()
    }

    /// The IPAM store: the open one, else the one on disk (whatever CIDR it
    /// was written for), else none.
    fn ipam_loaded<'a>(
        &self,
        inner: &'a mut Inner,
    ) -> Result<Option<&'a mut IpamStore>, NetworkError> {
        if inner.ipam.is_none() {
            inner.ipam = IpamStore::load(&self.opts.state_dir)?;
        }
        Ok(inner.ipam.as_mut())
    }

    fn host_ports_loaded<'a>(
        &self,
        inner: &'a mut Inner,
    ) -> Result<&'a mut BTreeMap<String, Vec<HostPort>>, NetworkError> {
        if inner.host_ports.is_none() {
            let path = self.opts.state_dir.join(HOST_PORTS_FILE);
            let map = match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    NetworkError::InvalidConfig(format!(
                        "{} is corrupt ({e}); remove it and restart the agent to rebuild host ports",
                        path.display()
                    ))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => return Err(io_err("read", &path)(e)),
            };
            inner.host_ports = Some(map);
        }
        Ok(inner.host_ports.get_or_insert_with(BTreeMap::new))
    }

    fn save_host_ports(&self, map: &BTreeMap<String, Vec<HostPort>>) -> Result<(), NetworkError> {
        let path = self.opts.state_dir.join(HOST_PORTS_FILE);
        let bytes = serde_json::to_vec_pretty(map).unwrap_or_default();
        write_atomic(&path, &bytes).map_err(io_err("write", &path))
    }

    fn nft_rules(&self, inner: &Inner, config: &NodeNetConfig) -> NftRules {
        let mut port_mappings = Vec::new();
        if let (Some(ports), Some(ipam)) = (&inner.host_ports, &inner.ipam) {
            for (uid, list) in ports {
                if let Some(pod_ip) = ipam.ipam().get(uid) {
                    port_mappings.extend(list.iter().map(|port| PortMapping {
                        port: *port,
                        pod_ip,
                    }));
                }
            }
        }
        NftRules {
            table: self.opts.nft_table.clone(),
            bridge: self.opts.bridge_name.clone(),
            pod_cidr: config.pod_cidr,
            cluster_cidr: config.cluster_cidr,
            masquerade: config.masquerade,
            port_mappings,
        }
    }

    /// Applies the nftables table unless the kernel holds exactly what this
    /// instance applied last with the same script; returns whether the
    /// kernel's table changed.
    fn sync_nft(&self, inner: &mut Inner) -> Result<bool, NetworkError> {
        let Some(node) = inner.node.clone() else {
            return Ok(false);
        };
        let script = nft::render(&self.nft_rules(inner, &node.config));
        let binary = &self.opts.nft_binary;
        let table = &self.opts.nft_table;
        let last = inner.nft_applied.clone();
        let (changed, listing) = super::netns::in_netns(self.node_netns(), || {
            let before = nft::list_table(binary, table)?;
            if let (Some(before), Some((last_script, last_listing))) = (&before, &last) {
                if *last_script == script && before == last_listing {
                    return Ok::<_, NetworkError>((false, Some(before.clone())));
                }
            }
            nft::apply(binary, table, &script)?;
            let after = nft::list_table(binary, table)?;
            Ok((after != before, after))
        })??;
        inner.nft_applied = listing.map(|l| (script, l));
        Ok(changed)
    }
}

// ---- netlink helpers -------------------------------------------------------

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, NetworkError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

async fn link_by_index(h: &Handle, index: u32) -> Result<Option<LinkMessage>, NetworkError> {
    match h.link().get().match_index(index).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("get link #{index}"))(e)),
    }
}

async fn all_links(h: &Handle) -> Result<Vec<LinkMessage>, NetworkError> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links"))
}

async fn delete_link(h: &Handle, index: u32, name: &str) -> Result<(), NetworkError> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
        Err(e) => Err(nl(format!("delete link {name}"))(e)),
    }
}

fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

async fn set_up(h: &Handle, index: u32, name: &str) -> Result<(), NetworkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {name} up")))
}

async fn ipv4_addresses(
    h: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>, NetworkError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            })?;
            Some((ip, m.header.prefix_len, m))
        })
        .collect())
}

/// IPv4 routes of the main table.
async fn main_routes(h: &Handle) -> Result<Vec<RouteMessage>, NetworkError> {
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("list routes"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| {
            let table = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(m.header.table));
            table == u32::from(RouteHeader::RT_TABLE_MAIN)
        })
        .collect())
}

fn route_destination(m: &RouteMessage) -> Option<Ipv4Net> {
    let ip = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    Ipv4Net::new(ip, m.header.destination_prefix_length).ok()
}

fn route_gateway(m: &RouteMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn route_oif(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn is_ours(m: &RouteMessage) -> bool {
    m.header.protocol == RouteProtocol::from(ROUTE_PROTOCOL)
}

async fn resolve_mtu(h: &Handle, config: &NodeNetConfig) -> Result<u32, NetworkError> {
    const FALLBACK: u32 = 1500;
    match &config.mtu {
        MtuSource::Fixed(m) => Ok(*m),
        MtuSource::Uplink(name) => {
            let link = link_by_name(h, name).await?.ok_or_else(|| {
                NetworkError::InvalidConfig(format!("uplink {name} does not exist"))
            })?;
            Ok(link_mtu(&link).unwrap_or(FALLBACK))
        }
        MtuSource::Auto => {
            let mut uplink = None;
            if let Some(addr) = config.node_address {
                let msgs: Vec<AddressMessage> = h
                    .address()
                    .get()
                    .execute()
                    .try_collect()
                    .await
                    .map_err(nl("list addresses"))?;
                uplink = msgs
                    .iter()
                    .find(|m| {
                        m.attributes.iter().any(
                            |a| matches!(a, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == addr),
                        )
                    })
                    .map(|m| m.header.index);
            }
            if uplink.is_none() {
                uplink = main_routes(h)
                    .await?
                    .iter()
                    .find(|r| r.header.destination_prefix_length == 0)
                    .and_then(route_oif);
            }
            match uplink {
                Some(index) => Ok(link_by_index(h, index)
                    .await?
                    .as_ref()
                    .and_then(link_mtu)
                    .unwrap_or(FALLBACK)),
                None => Ok(FALLBACK),
            }
        }
    }
}

/// Creates or repairs the bridge, its address and MTU; returns its index.
async fn ensure_bridge(
    h: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix_len: u8,
    mtu: u32,
    repaired: &mut Vec<String>,
) -> Result<u32, NetworkError> {
    let link = match link_by_name(h, name).await? {
        Some(link) => link,
        None => {
            h.link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(nl(format!("create bridge {name}")))?;
            repaired.push(format!("created bridge {name}"));
            let link = link_by_name(h, name)
                .await?
                .ok_or_else(|| NetworkError::LinkConflict {
                    name: name.to_string(),
                    reason: "vanished right after it was created".into(),
                })?;
            // An MTU given at creation is not "set by the user" for the
            // bridge driver, which would then follow its ports (and fall
            // back to 1500 once the last pod is gone): set it explicitly.
            h.link()
                .set(
                    LinkUnspec::new_with_index(link.header.index)
                        .mtu(mtu)
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("set MTU of {name}")))?;
            link_by_name(h, name).await?.unwrap_or(link)
        }
    };
    if link_kind(&link) != Some(&InfoKind::Bridge) {
        return Err(NetworkError::LinkConflict {
            name: name.to_string(),
            reason: "exists but is not a bridge".into(),
        });
    }
    let index = link.header.index;
    if link_mtu(&link) != Some(mtu) {
        h.link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(nl(format!("set MTU of {name}")))?;
        repaired.push(format!("set MTU of {name} to {mtu}"));
    }
    if !is_up(&link) {
        set_up(h, index, name).await?;
        repaired.push(format!("set {name} up"));
    }
    let mut has_gateway = false;
    for (ip, len, msg) in ipv4_addresses(h, index).await? {
        if ip == gateway && len == prefix_len {
            has_gateway = true;
        } else {
            h.address()
                .del(msg)
                .execute()
                .await
                .map_err(nl(format!("remove stale address {ip}/{len} from {name}")))?;
            repaired.push(format!("removed stale address {ip}/{len} from {name}"));
        }
    }
    if !has_gateway {
        h.address()
            .add(index, IpAddr::V4(gateway), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add {gateway}/{prefix_len} to {name}")))?;
        repaired.push(format!("added {gateway}/{prefix_len} to {name}"));
    }
    Ok(index)
}

/// Makes the routes tagged [`ROUTE_PROTOCOL`] exactly `desired` (pod CIDR to
/// gateway). Keeps going past a failing route and reports the first failure.
async fn sync_route_table(
    h: &Handle,
    desired: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> Result<RouteChanges, NetworkError> {
    let mut existing: BTreeMap<Ipv4Net, (Option<Ipv4Addr>, RouteMessage)> = BTreeMap::new();
    for route in main_routes(h).await?.into_iter().filter(is_ours) {
        if let Some(dst) = route_destination(&route) {
            existing.insert(dst, (route_gateway(&route), route));
        }
    }
    let mut changes = RouteChanges::default();
    let mut first_error = None;
    for (dst, gw) in desired {
        if existing.get(dst).map(|(g, _)| *g) == Some(Some(*gw)) {
            continue;
        }
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(*gw)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .build();
        match h.route().add(msg).replace().execute().await {
            Ok(()) => changes.added.push(*dst),
            Err(e) => {
                first_error.get_or_insert(nl(format!("route {dst} via {gw}"))(e));
            }
        }
    }
    for (dst, (_, msg)) in existing {
        if desired.contains_key(&dst) {
            continue;
        }
        match h.route().del(msg).execute().await {
            Ok(()) => changes.removed.push(dst),
            Err(e) if errno(&e) == Some(ESRCH) => changes.removed.push(dst),
            Err(e) => {
                first_error.get_or_insert(nl(format!("remove route {dst}"))(e));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changes),
    }
}

fn desired_routes(peers: &[Peer], own: Option<Ipv4Net>) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    peers
        .iter()
        .filter(|p| Some(p.pod_cidr.trunc()) != own.map(|c| c.trunc()))
        .map(|p| (p.pod_cidr.trunc(), p.address))
        .collect()
}

fn set_ip_forward(state_dir: &Path, repaired: &mut Vec<String>) -> Result<(), NetworkError> {
    let path = Path::new(IP_FORWARD);
    let current = std::fs::read_to_string(path).map_err(io_err("read", path))?;
    if current.trim() == "1" {
        return Ok(());
    }
    let orig = state_dir.join(IP_FORWARD_ORIG_FILE);
    if !orig.exists() {
        write_atomic(&orig, current.trim().as_bytes()).map_err(io_err("write", &orig))?;
    }
    std::fs::write(path, b"1").map_err(io_err("write", path))?;
    repaired.push("enabled net.ipv4.ip_forward".into());
    Ok(())
}

fn restore_ip_forward(state_dir: &Path) -> Result<(), NetworkError> {
    let orig = state_dir.join(IP_FORWARD_ORIG_FILE);
    match std::fs::read_to_string(&orig) {
        Ok(value) => {
            let value = if value.trim() == "1" { "1" } else { "0" };
            std::fs::write(IP_FORWARD, value).map_err(io_err("write", Path::new(IP_FORWARD)))?;
            std::fs::remove_file(&orig).map_err(io_err("remove", &orig))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("read", &orig)(e)),
    }
}

/// Node side of a pod: returns the host veth's index when it exists and is
/// wired, after creating it (with `eth0` in the pod namespace) if needed.
struct PodWiring<'a> {
    bridge: &'a str,
    veth: &'a str,
    netns: &'a Path,
    mtu: u32,
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
}

impl PodWiring<'_> {
    /// Creates the veth pair with its pod end directly in the pod namespace
    /// as `eth0`, the host end on the bridge and up.
    async fn create_veth(&self, h: &Handle) -> Result<(), NetworkError> {
        let bridge = link_by_name(h, self.bridge)
            .await?
            .ok_or(NetworkError::NodeNotReady)?;
        let ns =
            std::fs::File::open(self.netns).map_err(io_err("open pod namespace", self.netns))?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(POD_IFNAME)
            .mtu(self.mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(self.veth)
            .mtu(self.mtu)
            .controller(bridge.header.index)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("create veth {} for the pod", self.veth)))?;
        drop(ns);
        if let Some(link) = link_by_name(h, self.veth).await? {
            self.set_hairpin(h, link.header.index).await?;
        }
        Ok(())
    }

    /// Hairpin mode on the host end's bridge port, so that a pod reaching
    /// itself through a Service (DNAT back to its own address) gets its
    /// packets back on the port they came from (kubelet's `hairpin-veth`).
    async fn set_hairpin(&self, h: &Handle, index: u32) -> Result<(), NetworkError> {
        h.link()
            .set_port(rtnetlink::LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl(format!("set hairpin mode on {}", self.veth)))
    }

    /// Makes sure an existing host end is on the bridge and up.
    async fn fix_host_end(&self, h: &Handle, link: &LinkMessage) -> Result<(), NetworkError> {
        let bridge = link_by_name(h, self.bridge)
            .await?
            .ok_or(NetworkError::NodeNotReady)?;
        if link_controller(link) != Some(bridge.header.index) || !is_up(link) {
            h.link()
                .set(
                    LinkUnspec::new_with_index(link.header.index)
                        .controller(bridge.header.index)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("attach {} to {}", self.veth, self.bridge)))?;
        }
        self.set_hairpin(h, link.header.index).await?;
        Ok(())
    }

    /// Inside the pod namespace: `eth0` up with the address, `lo` up, the
    /// default route. Returns false if there is no `eth0` to configure.
    async fn configure_pod_side(&self, h: &Handle) -> Result<bool, NetworkError> {
        let Some(eth0) = link_by_name(h, POD_IFNAME).await? else {
            return Ok(false);
        };
        let index = eth0.header.index;
        let addresses = ipv4_addresses(h, index).await?;
        if !addresses
            .iter()
            .any(|(ip, len, _)| *ip == self.ip && *len == self.prefix_len)
        {
            for (ip, len, msg) in addresses {
                h.address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("remove stale pod address {ip}/{len}")))?;
            }
            h.address()
                .add(index, IpAddr::V4(self.ip), self.prefix_len)
                .execute()
                .await
                .map_err(nl(format!(
                    "add {}/{} to the pod",
                    self.ip, self.prefix_len
                )))?;
        }
        if !is_up(&eth0) {
            set_up(h, index, POD_IFNAME).await?;
        }
        if let Some(lo) = link_by_name(h, "lo").await? {
            if !is_up(&lo) {
                set_up(h, lo.header.index, "lo").await?;
            }
        }
        let has_default = main_routes(h).await?.iter().any(|r| {
            r.header.destination_prefix_length == 0 && route_gateway(r) == Some(self.gateway)
        });
        if !has_default {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(self.gateway)
                .output_interface(index)
                .build();
            h.route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("default route via {} in the pod", self.gateway)))?;
        }
        Ok(true)
    }
}

impl NetlinkNetwork {
    fn wire_pod(&self, w: &PodWiring<'_>) -> Result<(), NetworkError> {
        let node_netns = self.node_netns();
        // Node side: does the host end exist already?
        let existing = with_netlink(
            node_netns,
            |h| async move { link_by_name(&h, w.veth).await },
        )??;
        if existing.is_some() {
            // Adopt: configure the pod side; if the pod has no eth0 (a new
            // namespace), the old pair is stale and is recreated.
            if with_netlink(
                Some(w.netns),
                |h| async move { w.configure_pod_side(&h).await },
            )?? {
                return with_netlink(node_netns, |h| async move {
                    match link_by_name(&h, w.veth).await? {
                        Some(link) => w.fix_host_end(&h, &link).await,
                        None => Err(NetworkError::LinkConflict {
                            name: w.veth.to_string(),
                            reason: "vanished while the pod was being set up".into(),
                        }),
                    }
                })?;
            }
            with_netlink(node_netns, |h| async move {
                match link_by_name(&h, w.veth).await? {
                    Some(link) => delete_link(&h, link.header.index, w.veth).await,
                    None => Ok(()),
                }
            })??;
        }
        with_netlink(node_netns, |h| async move { w.create_veth(&h).await })??;
        if with_netlink(
            Some(w.netns),
            |h| async move { w.configure_pod_side(&h).await },
        )?? {
            Ok(())
        } else {
            Err(NetworkError::LinkConflict {
                name: POD_IFNAME.into(),
                reason: format!("was not found in {} after creating it", w.netns.display()),
            })
        }
    }

    fn unwire_pod(&self, veth: &str) -> Result<(), NetworkError> {
        with_netlink(self.node_netns(), |h| async move {
            match link_by_name(&h, veth).await? {
                Some(link) => delete_link(&h, link.header.index, veth).await,
                None => Ok(()),
            }
        })?
    }
}

impl PodNetwork for NetlinkNetwork {
    fn ensure_node(&self, config: &NodeNetConfig) -> Result<NodeNetState, NetworkError> {
        let pod_cidr = config.pod_cidr.trunc();
        if !config.cluster_cidr.contains(&pod_cidr) {
            return Err(NetworkError::InvalidConfig(format!(
                "pod CIDR {pod_cidr} is not inside the cluster CIDR {}",
                config.cluster_cidr
            )));
        }
        let mut inner = self.lock();
        let reopen = inner
            .ipam
            .as_ref()
            .is_none_or(|store| store.ipam().cidr() != pod_cidr);
        if reopen {
            inner.ipam = Some(IpamStore::open(&self.opts.state_dir, pod_cidr)?);
        }
        self.host_ports_loaded(&mut inner)?;
        let gateway = gateway_of(pod_cidr);
        let prefix_len = pod_cidr.prefix_len();
        let bridge = self.opts.bridge_name.as_str();
        let state_dir = self.opts.state_dir.as_path();
        let (mtu, mut repaired) = with_netlink(self.node_netns(), |h| async move {
            let mut repaired = Vec::new();
            let mtu = resolve_mtu(&h, config).await?;
            ensure_bridge(&h, bridge, gateway, prefix_len, mtu, &mut repaired).await?;
            set_ip_forward(state_dir, &mut repaired)?;
            Ok::<_, NetworkError>((mtu, repaired))
        })??;
        inner.node = Some(NodeSetup {
            config: NodeNetConfig {
                pod_cidr,
                ..config.clone()
            },
            mtu,
        });
        if self.sync_nft(&mut inner)? {
            repaired.push(format!("installed nftables table {}", self.opts.nft_table));
        }
        if let Some(peers) = inner.peers.clone() {
            let desired = desired_routes(&peers, Some(pod_cidr));
            let changes = with_netlink(self.node_netns(), |h| async move {
                sync_route_table(&h, &desired).await
            })??;
            repaired.extend(changes.added.iter().map(|d| format!("route to {d}")));
            repaired.extend(
                changes
                    .removed
                    .iter()
                    .map(|d| format!("removed route to {d}")),
            );
        }
        if !repaired.is_empty() {
            tracing::info!(?repaired, bridge, "node network set up");
        }
        Ok(NodeNetState {
            bridge: bridge.to_string(),
            gateway,
            pod_cidr,
            mtu,
            repaired,
        })
    }

    fn setup_pod(
        &self,
        pod_uid: &str,
        netns: &Path,
        host_ports: &[HostPort],
    ) -> Result<PodNetStatus, NetworkError> {
        let mut inner = self.lock();
        let node = inner.node.clone().ok_or(NetworkError::NodeNotReady)?;
        let ipam = inner.ipam.as_mut().ok_or(NetworkError::NodeNotReady)?;
        let held_before = ipam.ipam().get(pod_uid).is_some();
        let ip = ipam.allocate(pod_uid)?;
        let veth = veth_host_name(pod_uid);
        let wiring = PodWiring {
            bridge: &self.opts.bridge_name,
            veth: &veth,
            netns,
            mtu: node.mtu,
            ip,
            prefix_len: node.config.pod_cidr.prefix_len(),
            gateway: gateway_of(node.config.pod_cidr),
        };
        if let Err(error) = self.wire_pod(&wiring) {
            // Undo: no half-wired veth, and a fresh address goes back.
            let mut cleanup = self.unwire_pod(&veth).err();
            if !held_before {
                if let Err(e) = ipam.release(pod_uid) {
                    cleanup.get_or_insert(e.into());
                }
            }
            return Err(match cleanup {
                None => error,
                Some(c) => NetworkError::WithCleanup {
                    source: Box::new(error),
                    cleanup: Box::new(c),
                },
            });
        }
        let ports = self.host_ports_loaded(&mut inner)?;
        let changed = match ports.get(pod_uid) {
            Some(old) => old.as_slice() != host_ports,
            None => !host_ports.is_empty(),
        };
        if changed {
            if host_ports.is_empty() {
                ports.remove(pod_uid);
            } else {
                ports.insert(pod_uid.to_string(), host_ports.to_vec());
            }
            let snapshot = ports.clone();
            self.save_host_ports(&snapshot)?;
        }
        if changed {
            self.sync_nft(&mut inner)?;
        }
        Ok(PodNetStatus {
            ip,
            prefix_len: wiring.prefix_len,
            gateway: wiring.gateway,
            veth_host_name: veth,
        })
    }

    fn teardown_pod(&self, pod_uid: &str, _netns: &Path) -> Result<(), NetworkError> {
        let mut inner = self.lock();
        let veth = veth_host_name(pod_uid);
        self.unwire_pod(&veth)?;
        if let Some(ipam) = self.ipam_loaded(&mut inner)? {
            ipam.release(pod_uid)?;
        }
        let ports = self.host_ports_loaded(&mut inner)?;
        if ports.remove(pod_uid).is_some() {
            let snapshot = ports.clone();
            self.save_host_ports(&snapshot)?;
            self.sync_nft(&mut inner)?;
        }
        Ok(())
    }

    fn retain_pods(&self, live: &[&str]) -> Result<Vec<String>, NetworkError> {
        let mut inner = self.lock();
        let live_veths: BTreeSet<String> = live.iter().map(|uid| veth_host_name(uid)).collect();
        let mut stale: Vec<String> = match self.ipam_loaded(&mut inner)? {
            Some(store) => store
                .ipam()
                .allocations()
                .keys()
                .filter(|uid| !live.contains(&uid.as_str()))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let ports = self.host_ports_loaded(&mut inner)?;
        stale.extend(
            ports
                .keys()
                .filter(|uid| !live.contains(&uid.as_str()) && !stale.contains(uid))
                .cloned()
                .collect::<Vec<_>>(),
        );
        // Veths on the bridge that belong to no live pod (state lost).
        let bridge = self.opts.bridge_name.as_str();
        let live_veths = &live_veths;
        with_netlink(self.node_netns(), |h| async move {
            let links = all_links(&h).await?;
            let Some(bridge_index) = links
                .iter()
                .find(|l| link_name(l) == Some(bridge))
                .map(|l| l.header.index)
            else {
                return Ok(());
            };
            for link in &links {
                let name = link_name(link).unwrap_or_default();
                if link_controller(link) == Some(bridge_index)
                    && is_veth_host_name(name)
                    && !live_veths.contains(name)
                {
                    delete_link(&h, link.header.index, name).await?;
                }
            }
            Ok::<_, NetworkError>(())
        })??;
        let mut ports_changed = false;
        for uid in &stale {
            self.unwire_pod(&veth_host_name(uid))?;
            if let Some(ipam) = self.ipam_loaded(&mut inner)? {
                ipam.release(uid)?;
            }
            ports_changed |= self.host_ports_loaded(&mut inner)?.remove(uid).is_some();
        }
        if ports_changed {
            let snapshot = self.host_ports_loaded(&mut inner)?.clone();
            self.save_host_ports(&snapshot)?;
            self.sync_nft(&mut inner)?;
        }
        if !stale.is_empty() {
            tracing::info!(?stale, "released the network of pods that no longer exist");
        }
        Ok(stale)
    }

    fn sync_routes(&self, peers: &[Peer]) -> Result<RouteChanges, NetworkError> {
        let mut inner = self.lock();
        inner.peers = Some(peers.to_vec());
        let own = inner.node.as_ref().map(|n| n.config.pod_cidr);
        let desired = desired_routes(peers, own);
        let changes = with_netlink(self.node_netns(), |h| async move {
            sync_route_table(&h, &desired).await
        })??;
        if !changes.is_empty() {
            tracing::info!(added = ?changes.added, removed = ?changes.removed, "pod routes to other nodes changed");
        }
        Ok(changes)
    }

    fn reset(&self) -> Result<(), NetworkError> {
        let mut inner = self.lock();
        let known_veths: BTreeSet<String> = match self.ipam_loaded(&mut inner) {
            Ok(Some(store)) => store
                .ipam()
                .allocations()
                .keys()
                .map(|uid| veth_host_name(uid))
                .collect(),
            _ => BTreeSet::new(),
        };
        let bridge = self.opts.bridge_name.as_str();
        let binary = self.opts.nft_binary.as_str();
        let table = self.opts.nft_table.as_str();
        let state_dir = self.opts.state_dir.as_path();
        let known = &known_veths;
        // Best effort: every step runs even if an earlier one failed, and
        // the first failure is returned.
        let mut first_error: Option<NetworkError> = None;
        let mut keep = |r: Result<(), NetworkError>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "reset step failed");
                first_error.get_or_insert(e);
            }
        };
        let node_side = with_netlink(self.node_netns(), |h| async move {
            let mut errors = Vec::new();
            if let Err(e) = nft::apply(binary, table, &nft::render_delete(table)) {
                errors.push(e.into());
            }
            if let Err(e) = sync_route_table(&h, &BTreeMap::new()).await {
                errors.push(e);
            }
            let links = match all_links(&h).await {
                Ok(links) => links,
                Err(e) => {
                    errors.push(e);
                    Vec::new()
                }
            };
            let bridge_index = links
                .iter()
                .find(|l| link_name(l) == Some(bridge) && link_kind(l) == Some(&InfoKind::Bridge))
                .map(|l| l.header.index);
            for link in &links {
                let name = link_name(link).unwrap_or_default();
                let on_bridge = bridge_index.is_some() && link_controller(link) == bridge_index;
                let is_veth = link_kind(link) == Some(&InfoKind::Veth);
                if is_veth && (on_bridge || known.contains(name)) {
                    if let Err(e) = delete_link(&h, link.header.index, name).await {
                        errors.push(e);
                    }
                }
            }
            if let Some(index) = bridge_index {
                if let Err(e) = delete_link(&h, index, bridge).await {
                    errors.push(e);
                }
            }
            if let Err(e) = restore_ip_forward(state_dir) {
                errors.push(e);
            }
            errors
        });
        match node_side {
            Ok(errors) => errors.into_iter().for_each(|e| keep(Err(e))),
            Err(e) => keep(Err(e.into())),
        }
        if let Some(dir) = &self.opts.netns_dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    for entry in entries.flatten() {
                        keep(delete_netns(&entry.path()).map_err(Into::into));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => keep(Err(io_err("list", dir)(e))),
            }
        }
        for file in [IPAM_FILE, HOST_PORTS_FILE] {
            let path = state_dir.join(file);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => keep(Err(io_err("remove", &path)(e))),
            }
        }
        *inner = Inner::default();
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

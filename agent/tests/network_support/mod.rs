//! Test topology for the network integration tests: a "switch" namespace
//! with a bridge, nodes as namespaces joined to it by veths (each with its
//! own address and, once `ensure_node` ran, its own `bramble0`), pods as
//! namespaces, and an "outside" host on the switch. Everything lives in
//! namespaces whose files sit in a temp dir; `Drop` deletes them all, which
//! destroys every link, route and nftables table made inside.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bramble_agent::network::netns::{create_netns, delete_netns, in_netns, with_netlink};
use bramble_agent::network::{NetlinkNetwork, NetworkOptions, NodeNetConfig, Peer};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

pub const SUBNET_PREFIX: u8 = 24;
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const UPLINK_MTU: u32 = 1450;

/// A short random suffix so that names never collide between parallel tests.
pub fn suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:05x}",
        (nanos ^ std::process::id().rotate_left(16)) & 0xfffff
    )
}

pub struct Node {
    pub name: String,
    pub netns: PathBuf,
    pub address: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    pub state_dir: PathBuf,
    pub pods_dir: PathBuf,
}

impl Node {
    pub fn options(&self, id: &str) -> NetworkOptions {
        let mut opts = NetworkOptions::new(&self.state_dir, &self.name);
        opts.node_netns = Some(self.netns.clone());
        opts.netns_dir = Some(self.pods_dir.clone());
        opts.nft_table = format!("bramble-{id}");
        opts
    }

    pub fn network(&self, id: &str) -> NetlinkNetwork {
        NetlinkNetwork::new(self.options(id)).unwrap()
    }

    pub fn config(&self) -> NodeNetConfig {
        let mut config = NodeNetConfig::new(self.pod_cidr);
        config.cluster_cidr = CLUSTER_CIDR.parse().unwrap();
        config.node_address = Some(self.address);
        config
    }

    pub fn peer(&self) -> Peer {
        Peer {
            name: self.name.clone(),
            address: self.address,
            pod_cidr: self.pod_cidr,
        }
    }

    pub fn pod_netns(&self, uid: &str) -> PathBuf {
        let path = self.pods_dir.join(uid);
        create_netns(&path).unwrap();
        path
    }

    /// `ip ARGS` inside the node.
    pub fn ip(&self, args: &str) -> String {
        ns_cmd(&self.netns, "ip", args)
    }
}

/// Runs `program args` in the namespace at `netns` with `nsenter --net`.
pub fn ns_cmd(netns: &Path, program: &str, args: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Cluster {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub switch: PathBuf,
    pub nodes: Vec<Node>,
    pub outside: PathBuf,
    pub outside_address: Ipv4Addr,
}

impl Cluster {
    /// `n` nodes `192.168.77.{10+i}` with pod CIDRs `10.244.{i+1}.0/24`, and
    /// an outside host `192.168.77.200`, all on one switch.
    pub fn new(n: usize) -> Self {
        let id = suffix();
        let dir = tempfile::Builder::new()
            .prefix(&format!("bramble-net-{id}-"))
            .tempdir()
            .unwrap();
        let switch = dir.path().join("switch");
        let mut cluster = Cluster {
            id: id.clone(),
            switch: switch.clone(),
            outside: dir.path().join("outside"),
            outside_address: Ipv4Addr::new(192, 168, 77, 200),
            nodes: Vec::new(),
            dir,
        };
        create_netns(&switch).unwrap();
        let bridge = format!("btest-{id}");
        {
            let bridge = bridge.clone();
            with_netlink(Some(&switch), |h| async move {
                h.link()
                    .add(LinkBridge::new(&bridge).build())
                    .execute()
                    .await
                    .unwrap();
            })
            .unwrap();
        }
        for i in 0..n {
            let name = format!("node{i}");
            let netns = cluster.dir.path().join(&name);
            let address = Ipv4Addr::new(192, 168, 77, 10 + i as u8);
            cluster.attach(&bridge, &netns, &format!("s{i}-{id}"), address);
            let state_dir = cluster.dir.path().join(format!("{name}-state"));
            let pods_dir = cluster.dir.path().join(format!("{name}-pods"));
            std::fs::create_dir_all(&pods_dir).unwrap();
            cluster.nodes.push(Node {
                name,
                netns,
                address,
                pod_cidr: format!("10.244.{}.0/24", i + 1).parse().unwrap(),
                state_dir,
                pods_dir,
            });
        }
        let outside = cluster.outside.clone();
        let outside_address = cluster.outside_address;
        cluster.attach(&bridge, &outside, &format!("so-{id}"), outside_address);
        cluster
    }

    /// A namespace at `netns` joined to the switch bridge by a veth
    /// (`eth0` inside, MTU [`UPLINK_MTU`]) with `address`/24.
    fn attach(&self, bridge: &str, netns: &Path, switch_end: &str, address: Ipv4Addr) {
        create_netns(netns).unwrap();
        let ns = std::fs::File::open(netns).unwrap();
        let fd = ns.as_raw_fd();
        with_netlink(Some(&self.switch), |h| async move {
            let br = h
                .link()
                .get()
                .match_name(bridge.to_string())
                .execute()
                .try_next()
                .await
                .unwrap()
                .unwrap();
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name("eth0")
                .mtu(UPLINK_MTU)
                .setns_by_fd(fd)
                .build();
            let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(switch_end)
                .mtu(UPLINK_MTU)
                .controller(br.header.index)
                .up()
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link().add(msg).execute().await.unwrap();
        })
        .unwrap();
        drop(ns);
        with_netlink(Some(netns), |h| async move {
            for name in ["eth0", "lo"] {
                let link = h
                    .link()
                    .get()
                    .match_name(name.to_string())
                    .execute()
                    .try_next()
                    .await
                    .unwrap()
                    .unwrap();
                h.link()
                    .set(LinkUnspec::new_with_index(link.header.index).up().build())
                    .execute()
                    .await
                    .unwrap();
                if name == "eth0" {
                    h.address()
                        .add(link.header.index, IpAddr::V4(address), SUBNET_PREFIX)
                        .execute()
                        .await
                        .unwrap();
                }
            }
        })
        .unwrap();
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Ok(entries) = std::fs::read_dir(&node.pods_dir) {
                for entry in entries.flatten() {
                    let _ = delete_netns(&entry.path());
                }
            }
            let _ = delete_netns(&node.netns);
        }
        let _ = delete_netns(&self.outside);
        let _ = delete_netns(&self.switch);
    }
}

/// A TCP listener on an ephemeral port inside `netns`.
pub fn listen_in(netns: &Path) -> TcpListener {
    in_netns(Some(netns), || TcpListener::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap()
}

/// Serves `n` connections on `listener`, answering each with the source
/// address it sees; returns the listener's port.
pub fn serve_peer_address(listener: TcpListener, n: usize) -> u16 {
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut stream, peer)) = listener.accept() else {
                return;
            };
            let _ = stream.write_all(peer.ip().to_string().as_bytes());
        }
    });
    port
}

/// Connects from inside `netns` to `addr` and returns what the server
/// says (the source address it saw), or the error.
pub fn ask_from(netns: &Path, addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = in_netns(Some(netns), || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })
    .unwrap()?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Serializes tests that read host-wide state (`/proc/mounts`).
pub static HOST_STATE: Mutex<()> = Mutex::new(());

/// Lines of /proc/mounts that mention `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_string)
        .collect()
}

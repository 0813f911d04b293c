//! Pod address management for one node's pod CIDR.
//!
//! [`Ipam`] is pure state with no I/O: which pod holds which address, which
//! addresses were never handed out, and which were released. [`IpamStore`]
//! wraps it with persistence to `{state_dir}/ipam.json`, written atomically
//! before an address is returned, so neither an agent restart nor a reboot can
//! hand out an address that a running pod still holds.
//!
//! Allocation order: the lowest address never handed out first; once the range
//! has been used up, released addresses in the order they were released (a
//! FIFO), so a dead pod's address goes to a new pod as late as possible.
//! The network address, the gateway (first host, on the bridge) and the
//! broadcast address are never handed out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::state::write_atomic;

/// Name of the IPAM state file inside the agent's state directory.
pub const IPAM_FILE: &str = "ipam.json";

/// Version of the on-disk format of [`IPAM_FILE`].
const FORMAT_VERSION: u32 = 1;

/// Errors of address management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// Every address of the range is held by a pod.
    #[error("no free pod address in {cidr}: all {in_use} addresses are held by pods; delete pods or give the node a larger pod CIDR")]
    Exhausted {
        /// The node's pod CIDR.
        cidr: Ipv4Net,
        /// How many addresses are allocated.
        in_use: usize,
    },
    /// The CIDR cannot hold pods.
    #[error("pod CIDR {cidr} is unusable: {reason}")]
    InvalidCidr {
        /// The CIDR given.
        cidr: Ipv4Net,
        /// Why it is unusable.
        reason: &'static str,
    },
    /// The state file could not be read.
    #[error("cannot read IPAM state {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error(
        "IPAM state {path} is corrupt ({source}); check that no pod runs, then remove the file"
    )]
    Parse {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The state file could not be written.
    #[error("cannot write IPAM state {path}: {source}")]
    Write {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Address allocation state for one pod CIDR, with no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    cidr: Ipv4Net,
    /// The lowest address never handed out (may be past the range's end).
    next_fresh: u32,
    allocations: BTreeMap<String, Ipv4Addr>,
    released: VecDeque<Ipv4Addr>,
}

/// The serialized form of [`Ipam`] (`ipam.json`).
#[derive(Debug, Serialize, Deserialize)]
struct IpamFile {
    version: u32,
    cidr: Ipv4Net,
    next_fresh: Ipv4Addr,
    allocations: BTreeMap<String, Ipv4Addr>,
    released: Vec<Ipv4Addr>,
}

impl Ipam {
    /// An empty allocator for `cidr` (host bits are ignored). The prefix must
    /// leave room for a gateway and at least one pod (at most /30).
    pub fn new(cidr: Ipv4Net) -> Result<Self, IpamError> {
        let cidr = cidr.trunc();
        if cidr.prefix_len() > 30 {
            return Err(IpamError::InvalidCidr {
                cidr,
                reason: "the prefix must be /30 or shorter to hold a gateway and a pod",
            });
        }
        let first = u32::from(cidr.network()) + 2;
        Ok(Self {
            cidr,
            next_fresh: first,
            allocations: BTreeMap::new(),
            released: VecDeque::new(),
        })
    }

    /// The pod CIDR this allocator serves.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway address: the first host of the CIDR, on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.cidr)
    }

    /// The address held by `pod_uid`, if any.
    pub fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.allocations.get(pod_uid).copied()
    }

    /// Every allocation, pod uid to address.
    pub fn allocations(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.allocations
    }

    /// Released addresses, the next one to be reused first.
    pub fn released(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.released.iter().copied()
    }

    fn last_host(&self) -> u32 {
        u32::from(self.cidr.broadcast()) - 1
    }

    /// The address for `pod_uid`: the one it holds already, or a new one.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.get(pod_uid) {
            return Ok(ip);
        }
        let in_use: BTreeSet<Ipv4Addr> = self.allocations.values().copied().collect();
        let mut chosen = None;
        while self.next_fresh <= self.last_host() {
            let candidate = Ipv4Addr::from(self.next_fresh);
            self.next_fresh += 1;
            if !in_use.contains(&candidate) {
                chosen = Some(candidate);
                break;
            }
        }
        if chosen.is_none() {
            while let Some(candidate) = self.released.pop_front() {
                if !in_use.contains(&candidate) {
                    chosen = Some(candidate);
                    break;
                }
            }
        }
        let ip = chosen.ok_or(IpamError::Exhausted {
            cidr: self.cidr,
            in_use: in_use.len(),
        })?;
        self.allocations.insert(pod_uid.to_string(), ip);
        Ok(ip)
    }

    /// Releases the address of `pod_uid` (to the back of the reuse queue) and
    /// returns it; `None` if the pod held none.
    pub fn release(&mut self, pod_uid: &str) -> Option<Ipv4Addr> {
        let ip = self.allocations.remove(pod_uid)?;
        if !self.released.contains(&ip) {
            self.released.push_back(ip);
        }
        Some(ip)
    }

    /// Serializes the state to the `ipam.json` format.
    pub fn to_json(&self) -> Vec<u8> {
        let file = IpamFile {
            version: FORMAT_VERSION,
            cidr: self.cidr,
            next_fresh: Ipv4Addr::from(self.next_fresh.min(self.last_host() + 1)),
            allocations: self.allocations.clone(),
            released: self.released.iter().copied().collect(),
        };
        // Serializing plain maps and addresses cannot fail.
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    /// Parses the `ipam.json` format. Addresses outside the CIDR and
    /// duplicates are dropped from the reuse queue; allocations are kept as
    /// written (a running pod holds them).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let file: IpamFile = serde_json::from_slice(bytes)?;
        let cidr = file.cidr.trunc();
        let first = u32::from(cidr.network()) + 2;
        let end = u32::from(cidr.broadcast());
        let next_fresh = u32::from(file.next_fresh).clamp(first, end);
        let in_use: BTreeSet<Ipv4Addr> = file.allocations.values().copied().collect();
        let mut released = VecDeque::new();
        for ip in file.released {
            let n = u32::from(ip);
            if n >= first && n < end && !in_use.contains(&ip) && !released.contains(&ip) {
                released.push_back(ip);
            }
        }
        Ok(Self {
            cidr,
            next_fresh,
            allocations: file.allocations,
            released,
        })
    }
}

/// The gateway of a pod CIDR: its first host address.
pub fn gateway_of(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

/// [`Ipam`] persisted to `{state_dir}/ipam.json`: every change is written
/// (atomically, fsynced) before it takes effect in memory.
#[derive(Debug)]
pub struct IpamStore {
    path: PathBuf,
    ipam: Ipam,
}

impl IpamStore {
    /// Opens the state in `state_dir` for `cidr`, creating it if absent.
    ///
    /// If the file was written for a different CIDR (the master moved the
    /// node to another range) the old allocations cannot be honoured: the
    /// state starts afresh for the new CIDR.
    pub fn open(state_dir: &Path, cidr: Ipv4Net) -> Result<Self, IpamError> {
        let path = state_dir.join(IPAM_FILE);
        let fresh = Ipam::new(cidr)?;
        let ipam = match std::fs::read(&path) {
            Ok(bytes) => {
                let loaded = Ipam::from_json(&bytes).map_err(|source| IpamError::Parse {
                    path: path.clone(),
                    source,
                })?;
                if loaded.cidr == fresh.cidr {
                    loaded
                } else {
                    tracing::warn!(
                        old = %loaded.cidr, new = %fresh.cidr,
                        "pod CIDR changed; starting address allocation afresh"
                    );
                    fresh
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
            Err(source) => return Err(IpamError::Read { path, source }),
        };
        Ok(Self { path, ipam })
    }

    /// Opens the state in `state_dir` with whatever CIDR it was written
    /// for; `None` if there is none (teardown after a restart, before the
    /// node's CIDR is known again).
    pub fn load(state_dir: &Path) -> Result<Option<Self>, IpamError> {
        let path = state_dir.join(IPAM_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let ipam = Ipam::from_json(&bytes).map_err(|source| IpamError::Parse {
                    path: path.clone(),
                    source,
                })?;
                Ok(Some(Self { path, ipam }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IpamError::Read { path, source }),
        }
    }

    /// The current state.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// The path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Allocates (or returns the held) address of `pod_uid`, persisted.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.ipam.get(pod_uid) {
            return Ok(ip);
        }
        let mut next = self.ipam.clone();
        let ip = next.allocate(pod_uid)?;
        self.commit(next)?;
        Ok(ip)
    }

    /// Releases the address of `pod_uid`, persisted; `None` if it held none.
    pub fn release(&mut self, pod_uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        if self.ipam.get(pod_uid).is_none() {
            return Ok(None);
        }
        let mut next = self.ipam.clone();
        let ip = next.release(pod_uid);
        self.commit(next)?;
        Ok(ip)
    }

    fn commit(&mut self, next: Ipam) -> Result<(), IpamError> {
        write_atomic(&self.path, &next.to_json()).map_err(|source| IpamError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.ipam = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_never_used_first_and_gateway_skipped() {
        let mut ipam = Ipam::new(net("10.244.1.0/24")).unwrap();
        assert_eq!(ipam.gateway(), ip("10.244.1.1"));
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.244.1.2"));
        assert_eq!(ipam.allocate("b").unwrap(), ip("10.244.1.3"));
        // Idempotent.
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.244.1.2"));
    }

    #[test]
    fn released_addresses_come_back_only_after_the_rest_of_the_range() {
        let mut ipam = Ipam::new(net("10.0.0.0/29")).unwrap(); // hosts .2 ..= .6
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.0.0.2"));
        assert_eq!(ipam.allocate("b").unwrap(), ip("10.0.0.3"));
        assert_eq!(ipam.release("a"), Some(ip("10.0.0.2")));
        assert_eq!(ipam.release("b"), Some(ip("10.0.0.3")));
        assert_eq!(ipam.release("b"), None);
        assert_eq!(ipam.allocate("c").unwrap(), ip("10.0.0.4"));
        assert_eq!(ipam.allocate("d").unwrap(), ip("10.0.0.5"));
        assert_eq!(ipam.allocate("e").unwrap(), ip("10.0.0.6"));
        // Range used up: the FIFO, oldest release first.
        assert_eq!(ipam.allocate("f").unwrap(), ip("10.0.0.2"));
        assert_eq!(ipam.release("d"), Some(ip("10.0.0.5")));
        assert_eq!(ipam.allocate("g").unwrap(), ip("10.0.0.3"));
        assert_eq!(ipam.allocate("h").unwrap(), ip("10.0.0.5"));
    }

    #[test]
    fn exhaustion_names_the_cidr() {
        let mut ipam = Ipam::new(net("10.0.0.0/30")).unwrap(); // one pod: .2
        ipam.allocate("a").unwrap();
        let err = ipam.allocate("b").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { in_use: 1, .. }));
        assert!(err.to_string().contains("10.0.0.0/30"), "{err}");
        // A failed allocation does not disturb the state.
        assert_eq!(ipam.allocations().len(), 1);
    }

    #[test]
    fn full_slash_24_holds_253_pods() {
        let mut ipam = Ipam::new(net("10.244.7.0/24")).unwrap();
        for i in 0..253 {
            let got = ipam.allocate(&format!("p{i}")).unwrap();
            assert_ne!(got, ip("10.244.7.255"));
        }
        assert!(ipam.allocate("one-too-many").is_err());
    }

    #[test]
    fn node_cidrs_other_than_slash_24() {
        // A /26 (1,024 nodes in a /16): 61 pods, .2 ..= .62 of its block.
        let mut ipam = Ipam::new(net("10.244.0.64/26")).unwrap();
        assert_eq!(ipam.gateway(), ip("10.244.0.65"));
        let all: Vec<Ipv4Addr> = (0..61)
            .map(|i| ipam.allocate(&format!("p{i}")).unwrap())
            .collect();
        assert_eq!(all[0], ip("10.244.0.66"));
        assert_eq!(all[60], ip("10.244.0.126"));
        assert!(ipam.allocate("one-too-many").is_err());
        // A /20 crosses octet boundaries.
        let mut ipam = Ipam::new(net("10.16.16.0/20")).unwrap();
        for i in 0..300 {
            ipam.allocate(&format!("p{i}")).unwrap();
        }
        assert_eq!(ipam.get("p299"), Some(ip("10.16.17.45")));
        let back = Ipam::from_json(&ipam.to_json()).unwrap();
        assert_eq!(back, ipam);
    }

    #[test]
    fn too_small_cidr_is_refused() {
        assert!(matches!(
            Ipam::new(net("10.0.0.0/31")),
            Err(IpamError::InvalidCidr { .. })
        ));
    }

    #[test]
    fn json_round_trip_keeps_order() {
        let mut ipam = Ipam::new(net("10.0.0.0/28")).unwrap();
        for p in ["a", "b", "c", "d"] {
            ipam.allocate(p).unwrap();
        }
        ipam.release("c");
        ipam.release("a");
        let back = Ipam::from_json(&ipam.to_json()).unwrap();
        assert_eq!(back, ipam);
        assert_eq!(
            back.released().collect::<Vec<_>>(),
            vec![ip("10.0.0.4"), ip("10.0.0.2")]
        );
    }

    #[test]
    fn store_survives_restart_and_cidr_change_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let cidr = net("10.244.3.0/24");
        let mut store = IpamStore::open(dir.path(), cidr).unwrap();
        let a = store.allocate("a").unwrap();
        let b = store.allocate("b").unwrap();
        store.release("a").unwrap();
        drop(store);

        let mut store = IpamStore::open(dir.path(), cidr).unwrap();
        assert_eq!(store.ipam().get("b"), Some(b));
        assert_eq!(store.ipam().get("a"), None);
        // `a`'s address is not reused at once.
        let c = store.allocate("c").unwrap();
        assert_ne!(c, a);
        assert_ne!(c, b);

        let store = IpamStore::open(dir.path(), net("10.244.4.0/24")).unwrap();
        assert!(store.ipam().allocations().is_empty());
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IPAM_FILE), b"{not json").unwrap();
        let err = IpamStore::open(dir.path(), net("10.244.3.0/24")).unwrap_err();
        assert!(matches!(err, IpamError::Parse { .. }), "{err}");
    }
}

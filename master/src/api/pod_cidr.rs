//! Pod CIDRs: every node gets a block of `--node-cidr-mask-size` bits out of
//! the cluster's pod range `--cluster-cidr` (the names and defaults of
//! kube-controller-manager and k3s: `10.244.0.0/16` cut into `/24`s).
//!
//! A node keeps its block for as long as it is registered: the blocks are
//! stored in the Node objects (`spec.podCIDR`) and never moved. A new node
//! gets the lowest free block, free meaning that it overlaps no block held
//! by an existing node, whatever that block's size: the mask may change
//! between starts without disturbing the nodes that exist. A cluster range
//! that no longer holds an existing node's block is refused at start
//! ([`PodCidrPool::check_assigned`]): that node's pods would be unreachable.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The default cluster pod range.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The default prefix length of a node's block.
pub const DEFAULT_NODE_CIDR_MASK_SIZE: u8 = 24;
/// The longest node prefix: a `/30` holds the bridge's address and one pod
/// (the agent gives the network, first host and broadcast addresses to
/// no pod).
pub const MAX_NODE_CIDR_MASK_SIZE: u8 = 30;

/// Why a pod range or a block cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PodCidrError {
    /// `--cluster-cidr` is not an IPv4 CIDR.
    #[error("--cluster-cidr {value:?} is not an IPv4 CIDR: {reason} (e.g. 10.244.0.0/16)")]
    InvalidClusterCidr {
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// `--node-cidr-mask-size` does not fit the cluster range.
    #[error("--node-cidr-mask-size {mask} does not fit --cluster-cidr {cluster}: it must be between {} and {MAX_NODE_CIDR_MASK_SIZE} (from the cluster range's own prefix to a /{MAX_NODE_CIDR_MASK_SIZE}, which holds a gateway and one pod)", cluster.prefix_len())]
    MaskDoesNotFit {
        /// The mask given.
        mask: u8,
        /// The cluster range.
        cluster: Ipv4Net,
    },
    /// An existing node holds a block outside the cluster range.
    #[error("--cluster-cidr {cluster} does not contain pod CIDR {cidr} of existing node {node} (pod CIDRs never move): start with a --cluster-cidr that contains every node's pod CIDR, or remove the node first (`bramble node rm {node}`)")]
    OutsideCluster {
        /// The cluster range.
        cluster: Ipv4Net,
        /// The node.
        node: String,
        /// Its block.
        cidr: String,
    },
    /// The cluster range has fewer free blocks than asked for.
    #[error("registering {wanted} node(s) needs more pod CIDRs than are free: {free} /{mask} block(s) of --cluster-cidr {cluster} are left; nothing was registered (remove nodes with `bramble node rm`, or restart the master with a larger --cluster-cidr or a longer --node-cidr-mask-size)")]
    Exhausted {
        /// Blocks asked for.
        wanted: usize,
        /// Blocks still free.
        free: usize,
        /// The block size.
        mask: u8,
        /// The cluster range.
        cluster: Ipv4Net,
    },
}

/// The cluster pod range and the size of each node's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidrPool {
    cluster: Ipv4Net,
    mask: u8,
}

impl Default for PodCidrPool {
    fn default() -> Self {
        PodCidrPool {
            cluster: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16)
                .unwrap_or_else(|_| Ipv4Net::default()),
            mask: DEFAULT_NODE_CIDR_MASK_SIZE,
        }
    }
}

/// `[start, end)` of a block, as integers (`end` may be 2^32).
fn bounds(net: Ipv4Net) -> (u64, u64) {
    let start = u64::from(u32::from(net.network()));
    (start, start + (1u64 << (32 - u32::from(net.prefix_len()))))
}

impl PodCidrPool {
    /// A pool of `/mask` blocks of `cluster` (given as text, as on the
    /// command line). Host bits set in `cluster` are refused: the intended
    /// range would be ambiguous.
    pub fn parse(cluster: &str, mask: u8) -> Result<PodCidrPool, PodCidrError> {
        let invalid = |reason: String| PodCidrError::InvalidClusterCidr {
            value: cluster.to_string(),
            reason,
        };
        let net: Ipv4Net = cluster
            .trim()
            .parse()
            .map_err(|e| invalid(format!("{e}")))?;
        if net.trunc() != net {
            return Err(invalid(format!(
                "host bits are set; did you mean {}?",
                net.trunc()
            )));
        }
        PodCidrPool::new(net, mask)
    }

    /// A pool of `/mask` blocks of `cluster`.
    pub fn new(cluster: Ipv4Net, mask: u8) -> Result<PodCidrPool, PodCidrError> {
        let cluster = cluster.trunc();
        if mask < cluster.prefix_len() || mask > MAX_NODE_CIDR_MASK_SIZE {
            return Err(PodCidrError::MaskDoesNotFit { mask, cluster });
        }
        Ok(PodCidrPool { cluster, mask })
    }

    /// The cluster pod range.
    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    /// The prefix length of each node's block.
    pub fn node_mask_size(&self) -> u8 {
        self.mask
    }

    /// How many blocks the cluster range holds.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.mask - self.cluster.prefix_len())
    }

    /// Checks the blocks existing nodes hold, `(node, podCIDR)`: each must
    /// lie inside the cluster range. Blocks that are not IPv4 CIDRs are
    /// none of this pool's business and skipped.
    pub fn check_assigned<'a>(
        &self,
        assigned: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), PodCidrError> {
        for (node, cidr) in assigned {
            let Ok(net) = cidr.parse::<Ipv4Net>() else {
                continue;
            };
            if !self.cluster.contains(&net.trunc()) {
                return Err(PodCidrError::OutsideCluster {
                    cluster: self.cluster,
                    node: node.to_string(),
                    cidr: cidr.to_string(),
                });
            }
        }
        Ok(())
    }

    /// `count` free blocks, lowest first; `used` are the blocks nodes hold
    /// (any size, anywhere; text that is not an IPv4 CIDR is ignored).
    /// All or nothing: when fewer are free, nothing is handed out.
    pub fn allocate<'a>(
        &self,
        used: impl IntoIterator<Item = &'a str>,
        count: usize,
    ) -> Result<Vec<Ipv4Net>, PodCidrError> {
        let (cluster_start, cluster_end) = bounds(self.cluster);
        let mut taken: Vec<(u64, u64)> = used
            .into_iter()
            .filter_map(|c| c.parse::<Ipv4Net>().ok())
            .map(|n| bounds(n.trunc()))
            .filter(|(start, end)| *end > cluster_start && *start < cluster_end)
            .collect();
        taken.sort_unstable();
        let size = 1u64 << (32 - u32::from(self.mask));
        let mut blocks = Vec::new();
        let mut next_taken = 0;
        let mut start = cluster_start;
        while blocks.len() < count && start + size <= cluster_end {
            // Skip what ends before this candidate.
            while next_taken < taken.len() && taken[next_taken].1 <= start {
                next_taken += 1;
            }
            // Sorted by start: the first one left is the only one that can
            // overlap unless it starts after the candidate ends; a later one
            // may end later, so look at every one that starts inside.
            let overlap_end = taken[next_taken..]
                .iter()
                .take_while(|(s, _)| *s < start + size)
                .map(|(_, e)| *e)
                .max();
            match overlap_end {
                Some(end) => {
                    // The next aligned candidate after the overlapping block.
                    start = end.div_ceil(size) * size;
                }
                None => {
                    let address = Ipv4Addr::from(u32::try_from(start).unwrap_or(u32::MAX));
                    if let Ok(net) = Ipv4Net::new(address, self.mask) {
                        blocks.push(net);
                    }
                    start += size;
                }
            }
        }
        if blocks.len() < count {
            return Err(PodCidrError::Exhausted {
                wanted: count,
                free: blocks.len(),
                mask: self.mask,
                cluster: self.cluster,
            });
        }
        Ok(blocks)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn strings(nets: &[Ipv4Net]) -> Vec<String> {
        nets.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn default_pool_hands_out_slash_24s_of_10_244() -> Result<(), PodCidrError> {
        let pool = PodCidrPool::default();
        assert_eq!(
            pool,
            PodCidrPool::parse(DEFAULT_CLUSTER_CIDR, DEFAULT_NODE_CIDR_MASK_SIZE)?
        );
        assert_eq!(pool.capacity(), 256);
        let blocks = pool.allocate(["10.244.0.0/24", "10.244.2.0/24"], 3)?;
        assert_eq!(
            strings(&blocks),
            ["10.244.1.0/24", "10.244.3.0/24", "10.244.4.0/24"]
        );
        Ok(())
    }

    #[test]
    fn a_longer_mask_fits_more_nodes() -> Result<(), PodCidrError> {
        let pool = PodCidrPool::parse("10.244.0.0/16", 26)?;
        assert_eq!(pool.capacity(), 1024);
        let blocks = pool.allocate(std::iter::empty(), 1024)?;
        assert_eq!(blocks[0].to_string(), "10.244.0.0/26");
        assert_eq!(blocks[1].to_string(), "10.244.0.64/26");
        assert_eq!(blocks[1023].to_string(), "10.244.255.192/26");
        let used: Vec<String> = strings(&blocks);
        let err = pool
            .allocate(used.iter().map(String::as_str), 1)
            .unwrap_err();
        assert!(matches!(err, PodCidrError::Exhausted { free: 0, .. }));
        Ok(())
    }

    #[test]
    fn blocks_of_another_size_are_stepped_over() -> Result<(), PodCidrError> {
        // Nodes registered with /24s, master restarted with /26: the /24s
        // stay whole; new /26s go around them.
        let pool = PodCidrPool::parse("10.244.0.0/16", 26)?;
        let blocks = pool.allocate(["10.244.0.0/24", "10.244.1.64/26"], 4)?;
        assert_eq!(
            strings(&blocks),
            [
                "10.244.1.0/26",
                "10.244.1.128/26",
                "10.244.1.192/26",
                "10.244.2.0/26"
            ]
        );
        // And the other way round: /26s held, /24s wanted.
        let pool = PodCidrPool::parse("10.244.0.0/16", 24)?;
        let blocks = pool.allocate(["10.244.0.64/26", "10.244.2.0/26"], 2)?;
        assert_eq!(strings(&blocks), ["10.244.1.0/24", "10.244.3.0/24"]);
        // Blocks outside the range and garbage do not matter.
        let blocks = pool.allocate(["10.1.0.0/24", "fd00::/64", "bogus"], 1)?;
        assert_eq!(strings(&blocks), ["10.244.0.0/24"]);
        Ok(())
    }

    #[test]
    fn exhaustion_hands_out_nothing_and_says_what_to_change() -> Result<(), PodCidrError> {
        let pool = PodCidrPool::parse("10.0.0.0/29", 30)?;
        let err = pool.allocate(["10.0.0.0/30"], 2).unwrap_err();
        assert_eq!(
            err,
            PodCidrError::Exhausted {
                wanted: 2,
                free: 1,
                mask: 30,
                cluster: "10.0.0.0/29".parse().map_err(|_| err.clone())?,
            }
        );
        let message = err.to_string();
        assert!(message.contains("--cluster-cidr 10.0.0.0/29"), "{message}");
        assert!(message.contains("--node-cidr-mask-size"), "{message}");
        Ok(())
    }

    #[test]
    fn the_whole_address_space_works() -> Result<(), PodCidrError> {
        let pool = PodCidrPool::parse("0.0.0.0/0", 2)?;
        let err = pool.allocate(["192.0.0.0/2"], 4).unwrap_err();
        assert!(matches!(err, PodCidrError::Exhausted { free: 3, .. }));
        let pool = PodCidrPool::parse("255.255.255.248/29", 30)?;
        let blocks = pool.allocate(std::iter::empty(), 2)?;
        assert_eq!(
            strings(&blocks),
            ["255.255.255.248/30", "255.255.255.252/30"]
        );
        Ok(())
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let err = PodCidrPool::parse("10.244.0.0/33", 24).unwrap_err();
        assert!(err.to_string().starts_with("--cluster-cidr"), "{err}");
        let err = PodCidrPool::parse("10.244.1.0/16", 24).unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.244.0.0/16"),
            "{err}"
        );
        let err = PodCidrPool::parse("10.244.0.0/16", 8).unwrap_err();
        assert!(err.to_string().starts_with("--node-cidr-mask-size 8 does not fit --cluster-cidr 10.244.0.0/16: it must be between 16 and 30"), "{err}");
        assert!(PodCidrPool::parse("10.244.0.0/16", 31).is_err());
    }

    #[test]
    fn existing_blocks_must_lie_in_the_cluster_range() -> Result<(), PodCidrError> {
        let pool = PodCidrPool::parse("10.244.0.0/16", 26)?;
        pool.check_assigned([("pi-1", "10.244.3.0/24"), ("pi-2", "fd00::/64")])?;
        let err = pool
            .check_assigned([("pi-1", "10.244.3.0/24"), ("pi-2", "10.245.0.0/24")])
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("--cluster-cidr 10.244.0.0/16 does not contain pod CIDR 10.245.0.0/24 of existing node pi-2"),
            "{message}"
        );
        Ok(())
    }
}

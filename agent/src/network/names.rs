//! Names bramble gives to the links it creates.

use sha2::{Digest, Sha256};

/// Prefix of every host-side pod veth.
pub const VETH_PREFIX: &str = "bv";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// The host-side veth name of a pod: `bv` + 10 hex characters of the SHA-256
/// of the pod uid (12 bytes, stable across restarts, collision-free in
/// practice for the pods one node runs).
pub fn veth_host_name(pod_uid: &str) -> String {
    let digest = Sha256::digest(pod_uid.as_bytes());
    let mut name = String::with_capacity(12);
    name.push_str(VETH_PREFIX);
    for byte in &digest[..5] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// Whether `name` has the shape of a bramble pod veth (`bv` + 10 lowercase hex).
pub fn is_veth_host_name(name: &str) -> bool {
    name.len() == 12
        && name.starts_with(VETH_PREFIX)
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks that `name` is a valid interface name (1..=15 bytes, no `/`,
/// whitespace or `:`).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_name_is_stable_short_and_recognised() {
        let a = veth_host_name("0f3c2a9e-1111-2222-3333-444455556666");
        assert_eq!(a, veth_host_name("0f3c2a9e-1111-2222-3333-444455556666"));
        assert_ne!(a, veth_host_name("other"));
        assert_eq!(a.len(), 12);
        assert!(a.len() <= MAX_IFNAME);
        assert!(is_veth_host_name(&a));
        assert!(valid_ifname(&a));
        assert!(!is_veth_host_name("bramble0"));
        assert!(!is_veth_host_name("bvXYZ0000000"));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(valid_ifname("bramble0"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a-very-long-name-0"));
        assert!(!valid_ifname("a/b"));
    }
}

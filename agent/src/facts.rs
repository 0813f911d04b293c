//! Facts about the device (architecture, OS, memory, cgroups, identity) and
//! the node conditions that follow from them.
//!
//! Reading is split in two: [`Facts::gather`] reads files under `/proc`,
//! `/sys` and `/etc`, and the pure `parse_*` functions turn their contents
//! into values, so every rule is unit-tested with sample contents.
//!
//! # Test-only overrides
//!
//! These environment variables replace what the device says, so tests can
//! play a Raspberry Pi on any machine. They are for tests only; never set
//! them on a real device:
//!
//! - `BRAMBLE_FAKE_ARCH`: a `uname -m` value such as `armv7l` or `aarch64`;
//! - `BRAMBLE_FAKE_CGROUP_CONTROLLERS`: space- or comma-separated controllers
//!   (an empty value means none, e.g. to play a device without `memory`);
//! - `BRAMBLE_FAKE_MEMORY_BYTES`: total memory in bytes;
//! - `BRAMBLE_FAKE_CPUS`: the number of CPUs.

use std::path::Path;

use bramble_common::wire::{ConditionReport, NodeFacts, NodeStatusReport};

/// The most pods an agent accepts (Kubernetes' default).
pub const MAX_PODS: u32 = 110;

/// The version of this agent.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Reason of the Ready condition when the memory cgroup controller is missing.
pub const REASON_MEMORY_CGROUP_MISSING: &str = "MemoryCgroupMissing";

/// Message of the Ready condition when the memory cgroup controller is
/// missing: the exact fix on Raspberry Pi OS.
pub const MESSAGE_MEMORY_CGROUP_MISSING: &str = "the memory cgroup controller is not enabled, so \
    the agent cannot limit or account pod memory: add `cgroup_enable=memory cgroup_memory=1` to \
    the single line of /boot/firmware/cmdline.txt (or /boot/cmdline.txt on older Raspberry Pi OS) \
    and reboot";

/// What the agent knows about its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The facts as they travel in reports.
    pub node: NodeFacts,
}

impl Facts {
    /// Read the facts of this device (plus the test-only overrides, see the
    /// module documentation). Never fails: what cannot be read stays empty
    /// (and is logged at debug).
    pub fn gather() -> Facts {
        let read = |path: &str| match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::debug!(path, error = %e, "cannot read a fact source");
                None
            }
        };
        let machine = env_override("BRAMBLE_FAKE_ARCH")
            .or_else(|| read("/proc/sys/kernel/arch").map(|s| s.trim().to_owned()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
        let (architecture, arch_variant) = parse_architecture(&machine);
        let cgroup_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let cgroup_controllers = match env_override("BRAMBLE_FAKE_CGROUP_CONTROLLERS") {
            Some(list) => parse_controller_list(&list),
            None if cgroup_v2 => read("/sys/fs/cgroup/cgroup.controllers")
                .map(|t| parse_controller_list(&t))
                .unwrap_or_default(),
            None => read("/proc/cgroups")
                .map(|t| parse_proc_cgroups(&t))
                .unwrap_or_default(),
        };
        let memory_bytes = env_override("BRAMBLE_FAKE_MEMORY_BYTES")
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| read("/proc/meminfo").and_then(|t| parse_meminfo_total(&t)))
            .unwrap_or(0);
        let cpus = env_override("BRAMBLE_FAKE_CPUS")
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .and_then(|n| u32::try_from(n.get()).ok())
            })
            .unwrap_or(1);
        let os_image = read("/etc/os-release")
            .or_else(|| read("/usr/lib/os-release"))
            .and_then(|t| parse_os_release_pretty_name(&t))
            .unwrap_or_default();
        let trimmed = |path: &str| read(path).map(|s| s.trim().to_owned()).unwrap_or_default();
        Facts {
            node: NodeFacts {
                architecture,
                arch_variant,
                os: "linux".into(),
                os_image,
                kernel_version: trimmed("/proc/sys/kernel/osrelease"),
                cpus,
                memory_bytes,
                agent_version: AGENT_VERSION.into(),
                cgroup_version: if cgroup_v2 { 2 } else { 1 },
                cgroup_controllers,
                hostname: trimmed("/proc/sys/kernel/hostname"),
                boot_id: trimmed("/proc/sys/kernel/random/boot_id"),
                machine_id: trimmed("/etc/machine-id"),
                max_pods: MAX_PODS,
            },
        }
    }

    /// True when the memory cgroup controller is available.
    pub fn has_memory_cgroup(&self) -> bool {
        self.node.cgroup_controllers.iter().any(|c| c == "memory")
    }

    /// The node's status as reported: facts, conditions (see
    /// [`node_conditions`]) and addresses. `since_unix` is when the agent
    /// started, the transition time of its conditions.
    pub fn node_status(&self, internal_ip: Option<&str>, since_unix: i64) -> NodeStatusReport {
        let mut addresses = Vec::new();
        if let Some(ip) = internal_ip {
            addresses.push(("InternalIP".to_owned(), ip.to_owned()));
        }
        if !self.node.hostname.is_empty() {
            addresses.push(("Hostname".to_owned(), self.node.hostname.clone()));
        }
        NodeStatusReport {
            facts: self.node.clone(),
            conditions: node_conditions(&self.node, since_unix),
            addresses,
        }
    }
}

/// The node's conditions before anything was measured: `Ready` (`False`
/// with reason [`REASON_MEMORY_CGROUP_MISSING`] and the fix as message when
/// the memory cgroup controller is missing) and no pressure. The node loop
/// replaces them with [`crate::health`]'s readings.
pub fn node_conditions(facts: &NodeFacts, since_unix: i64) -> Vec<ConditionReport> {
    crate::health::conditions(
        facts,
        &crate::health::HealthReport::default(),
        &[],
        since_unix,
    )
}

fn env_override(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `uname -m` to bramble's architecture and variant: `aarch64`/`arm64` →
/// (`arm64`, `v8`), `armv6l` → (`arm`, `v6`), `armv7l` → (`arm`, `v7`),
/// `x86_64` → (`amd64`, ``). Anything else is passed through with no variant.
pub fn parse_architecture(machine: &str) -> (String, String) {
    let machine = machine.trim();
    let (arch, variant) = match machine {
        "aarch64" | "arm64" | "armv8l" | "aarch64_be" => ("arm64", "v8"),
        "x86_64" | "amd64" => ("amd64", ""),
        "i386" | "i486" | "i586" | "i686" => ("386", ""),
        m if m.starts_with("armv6") => ("arm", "v6"),
        m if m.starts_with("armv7") => ("arm", "v7"),
        m if m.starts_with("armv5") => ("arm", "v5"),
        "arm" => ("arm", ""),
        other => (other, ""),
    };
    (arch.to_owned(), variant.to_owned())
}

/// `PRETTY_NAME` of an os-release file, unquoted.
pub fn parse_os_release_pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.replace("\\\"", "\"").replace("\\\\", "\\"))
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | Some("KB") | Some("kb") => value.checked_mul(1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

/// The controllers of a cgroup v2 `cgroup.controllers` file (or any space-
/// or comma-separated list), sorted and without duplicates.
pub fn parse_controller_list(text: &str) -> Vec<String> {
    let mut list: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    list.sort();
    list.dedup();
    list
}

/// The enabled controllers of a cgroup v1 `/proc/cgroups` file (the last
/// column, `enabled`, is 1), sorted.
pub fn parse_proc_cgroups(text: &str) -> Vec<String> {
    let mut list: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [name, _hierarchy, _count, "1"] => Some((*name).to_owned()),
                _ => None,
            }
        })
        .collect();
    list.sort();
    list.dedup();
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures() {
        let cases = [
            ("aarch64", "arm64", "v8"),
            ("armv7l", "arm", "v7"),
            ("armv6l", "arm", "v6"),
            ("x86_64", "amd64", ""),
            ("riscv64", "riscv64", ""),
        ];
        for (machine, arch, variant) in cases {
            assert_eq!(
                parse_architecture(machine),
                (arch.to_owned(), variant.to_owned()),
                "{machine}"
            );
        }
    }

    #[test]
    fn os_release() {
        let raspbian = "PRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\nNAME=\"Raspbian GNU/Linux\"\nVERSION_ID=\"12\"\n";
        assert_eq!(
            parse_os_release_pretty_name(raspbian).as_deref(),
            Some("Raspbian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release_pretty_name("ID=alpine\nPRETTY_NAME=Alpine\n").as_deref(),
            Some("Alpine")
        );
        assert_eq!(parse_os_release_pretty_name("ID=x\n"), None);
    }

    #[test]
    fn meminfo() {
        let pi_zero = "MemTotal:         439592 kB\nMemFree:          262676 kB\n";
        assert_eq!(parse_meminfo_total(pi_zero), Some(439_592 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn cgroup_v2_controllers() {
        assert_eq!(
            parse_controller_list("cpuset cpu io memory pids\n"),
            vec!["cpu", "cpuset", "io", "memory", "pids"]
        );
        assert!(parse_controller_list("").is_empty());
        assert_eq!(parse_controller_list("cpu,memory"), vec!["cpu", "memory"]);
    }

    #[test]
    fn cgroup_v1_enabled_column() {
        // Raspberry Pi OS without cgroup_enable=memory: memory is disabled.
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                    cpuset\t2\t1\t1\ncpu\t3\t1\t1\nmemory\t0\t70\t0\npids\t4\t74\t1\n";
        assert_eq!(parse_proc_cgroups(text), vec!["cpu", "cpuset", "pids"]);
    }

    #[test]
    fn ready_condition_names_the_memory_cgroup_fix() {
        let mut facts = NodeFacts {
            cgroup_controllers: vec!["cpu".into(), "pids".into()],
            ..NodeFacts::default()
        };
        let conditions = node_conditions(&facts, 7);
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("a Ready condition");
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "False")
        );
        assert_eq!(ready.reason, "MemoryCgroupMissing");
        assert!(ready
            .message
            .contains("add `cgroup_enable=memory cgroup_memory=1` to the single line of /boot/firmware/cmdline.txt (or /boot/cmdline.txt on older Raspberry Pi OS) and reboot"));
        assert_eq!(ready.last_transition_unix, 7);
        facts.cgroup_controllers.push("memory".into());
        assert!(node_conditions(&facts, 7)
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"));
    }

    #[test]
    fn gather_reads_this_machine() {
        let facts = Facts::gather();
        assert_eq!(facts.node.os, "linux");
        assert!(facts.node.cpus >= 1);
        assert!(!facts.node.architecture.is_empty());
        assert_eq!(facts.node.max_pods, MAX_PODS);
    }
}

//! Start-up checks of what the runtime needs from the host: root, the cpu,
//! memory and pids cgroup controllers, overlayfs and namespaces. A missing
//! piece becomes a node condition with the exact fix, never a crash.

use std::fs;

use bramble_common::meta::Condition;

/// The outcome of the host checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostReport {
    /// Problems found (empty when the host is fit).
    pub problems: Vec<String>,
}

impl HostReport {
    /// True when nothing is missing.
    pub fn ready(&self) -> bool {
        self.problems.is_empty()
    }

    /// The node's `Ready` condition for this report.
    pub fn ready_condition(&self) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: if self.ready() { "True" } else { "False" }.into(),
            reason: Some(
                if self.ready() {
                    "KubeletReady"
                } else {
                    "HostCheckFailed"
                }
                .into(),
            ),
            message: Some(if self.ready() {
                "bramble-agent is ready".into()
            } else {
                self.problems.join("; ")
            }),
            last_heartbeat_time: None,
            last_transition_time: None,
            last_probe_time: None,
        }
    }
}

/// The fix for a missing memory controller on a Raspberry Pi: the same
/// message as the node's `Ready=False` condition ([`crate::facts`]).
pub const MEMORY_CGROUP_FIX: &str = crate::facts::MESSAGE_MEMORY_CGROUP_MISSING;

/// Enabled cgroup controllers: v2 `cgroup.controllers` plus enabled v1
/// hierarchies from `/proc/cgroups`.
pub fn enabled_controllers() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(s) = fs::read_to_string("/proc/cgroups") {
        for l in s.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 4 && f[3] == "1" {
                out.push(f[0].to_string());
            }
        }
    }
    for p in [
        "/sys/fs/cgroup/cgroup.controllers",
        "/sys/fs/cgroup/unified/cgroup.controllers",
    ] {
        if let Ok(s) = fs::read_to_string(p) {
            out.extend(s.split_whitespace().map(str::to_string));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Runs the checks against this host.
pub fn check_host() -> HostReport {
    let controllers = enabled_controllers();
    let overlay = fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    let namespaces = ["net", "pid", "mnt", "uts", "ipc"]
        .iter()
        .filter(|n| !std::path::Path::new(&format!("/proc/self/ns/{n}")).exists())
        .map(|n| n.to_string())
        .collect();
    check(
        nix::unistd::geteuid().is_root(),
        &controllers,
        overlay,
        namespaces,
    )
}

/// The checks on given facts (pure, for tests).
pub fn check(
    root: bool,
    controllers: &[String],
    overlay: bool,
    missing_ns: Vec<String>,
) -> HostReport {
    let mut problems = Vec::new();
    if !root {
        problems.push("bramble-agent must run as root to create containers".to_string());
    }
    let has = |c: &str| controllers.iter().any(|x| x == c);
    if !has("memory") {
        problems.push(MEMORY_CGROUP_FIX.to_string());
    }
    for c in ["cpu", "pids"] {
        if !has(c) {
            problems.push(format!("the {c} cgroup controller is not available: enable it in the kernel (CONFIG_CGROUP_{})", c.to_ascii_uppercase()));
        }
    }
    if !overlay {
        problems.push(
            "overlayfs is not available: run `modprobe overlay` and add `overlay` to /etc/modules"
                .into(),
        );
    }
    for n in missing_ns {
        problems.push(format!("the kernel lacks {n} namespaces"));
    }
    HostReport { problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_memory_controller_names_the_fix() {
        let r = check(true, &["cpu".into(), "pids".into()], true, vec![]);
        assert!(!r.ready());
        let c = r.ready_condition();
        assert_eq!(c.status, "False");
        assert!(c
            .message
            .unwrap_or_default()
            .contains("cgroup_enable=memory cgroup_memory=1"));
        assert!(check(
            true,
            &["cpu".into(), "memory".into(), "pids".into()],
            true,
            vec![]
        )
        .ready());
    }

    #[test]
    fn this_host_is_fit() {
        // The dev machine and CI run as root with all controllers.
        if nix::unistd::geteuid().is_root() {
            assert_eq!(check_host().problems, Vec::<String>::new());
        }
    }
}

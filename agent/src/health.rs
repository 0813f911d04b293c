//! The node's conditions as the kubelet reports them: `Ready` says whether
//! the node can run pods now (its runtime and its pod network work), and
//! `MemoryPressure`, `DiskPressure` and `PIDPressure` come from measured
//! thresholds (the kubelet's default hard eviction thresholds).
//!
//! [`check`] reads the machine (statvfs of the state dir, `/proc/meminfo`,
//! the number of processes) and the runtime's own health; [`conditions`]
//! turns that into conditions, keeping each condition's transition time
//! while its status does not change; [`transitions`] names the kubelet's
//! events for the changes (`NodeNotReady`, `NodeHasDiskPressure`, ...).

use std::path::Path;

use bramble_common::wire::{ConditionReport, NodeFacts};

use crate::facts::{MESSAGE_MEMORY_CGROUP_MISSING, REASON_MEMORY_CGROUP_MISSING};

/// `memory.available` below this is memory pressure (kubelet: `100Mi`).
pub const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;
/// `nodefs.available` below this percentage is disk pressure (kubelet: `10%`).
pub const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
/// `nodefs.inodesFree` below this percentage is disk pressure (kubelet: `5%`).
pub const INODES_FREE_MIN_PERCENT: u64 = 5;
/// `pid.available` below this percentage of `pid_max` is PID pressure (the
/// kubelet has no default; bramble takes the inode rule's 5 %).
pub const PIDS_AVAILABLE_MIN_PERCENT: u64 = 5;

/// What the runtime says of itself (the CRI's `RuntimeReady` and
/// `NetworkReady` conditions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeHealth {
    /// Why the runtime cannot start containers (`None`: it can).
    pub runtime: Option<String>,
    /// Why the pod network is not working (`None`: it is, or there is none).
    pub network: Option<String>,
}

/// One reading of the machine and the runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// The runtime's own health.
    pub runtime: RuntimeHealth,
    /// The state dir's file system is mounted read-only (an SD card that
    /// failed and was remounted read-only by the kernel).
    pub state_read_only: bool,
    /// Bytes available to the agent on the state dir's file system.
    pub disk_available: Option<u64>,
    /// Size of that file system in bytes.
    pub disk_total: Option<u64>,
    /// Free inodes on it.
    pub inodes_free: Option<u64>,
    /// Inodes in all on it.
    pub inodes_total: Option<u64>,
    /// `MemAvailable` in bytes.
    pub memory_available: Option<u64>,
    /// Processes and threads running.
    pub pids_used: Option<u64>,
    /// `kernel.pid_max`.
    pub pid_max: Option<u64>,
}

/// Reads the machine: the file system of `state_dir`, memory and pids.
/// Blocking (a statvfs and two small /proc reads): call it from
/// `spawn_blocking`.
pub fn check(state_dir: &Path, runtime: RuntimeHealth) -> HealthReport {
    let mut report = HealthReport {
        runtime,
        ..HealthReport::default()
    };
    if let Ok(fs) = nix::sys::statvfs::statvfs(state_dir) {
        // The field types differ between 32- and 64-bit targets: widen.
        let block = u128::from(fs.fragment_size());
        let bytes = |blocks: u128| Some(u64::try_from(blocks * block).unwrap_or(u64::MAX));
        let count = |n: u128| Some(u64::try_from(n).unwrap_or(u64::MAX));
        report.state_read_only = fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
        report.disk_available = bytes(u128::from(fs.blocks_available()));
        report.disk_total = bytes(u128::from(fs.blocks()));
        report.inodes_free = count(u128::from(fs.files_available()));
        report.inodes_total = count(u128::from(fs.files()));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
        report.memory_available = meminfo_field(&text, "MemAvailable:");
    }
    if let Ok(text) = std::fs::read_to_string("/proc/loadavg") {
        // "0.00 0.01 0.05 2/345 6789": running/total scheduling entities.
        report.pids_used = text
            .split_whitespace()
            .nth(3)
            .and_then(|field| field.split_once('/'))
            .and_then(|(_, total)| total.parse().ok());
    }
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/pid_max") {
        report.pid_max = text.trim().parse().ok();
    }
    report
}

/// A `/proc/meminfo` field in bytes.
fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        kib.checked_mul(1024)
    })
}

fn below_percent(value: Option<u64>, total: Option<u64>, percent: u64) -> bool {
    match (value, total) {
        (Some(value), Some(total)) if total > 0 => {
            u128::from(value) * 100 < u128::from(total) * u128::from(percent)
        }
        _ => false,
    }
}

/// The node's conditions for `report`, as the kubelet words them.
/// `previous` are the conditions reported before (their transition times
/// are kept while the status stays); new transitions happen at `now_unix`.
pub fn conditions(
    facts: &NodeFacts,
    report: &HealthReport,
    previous: &[ConditionReport],
    now_unix: i64,
) -> Vec<ConditionReport> {
    let memory_pressure = report
        .memory_available
        .is_some_and(|available| available < MEMORY_AVAILABLE_MIN);
    let disk_pressure = below_percent(
        report.disk_available,
        report.disk_total,
        DISK_AVAILABLE_MIN_PERCENT,
    ) || below_percent(
        report.inodes_free,
        report.inodes_total,
        INODES_FREE_MIN_PERCENT,
    );
    let pid_pressure = match (report.pids_used, report.pid_max) {
        (Some(used), Some(max)) => below_percent(
            Some(max.saturating_sub(used)),
            Some(max),
            PIDS_AVAILABLE_MIN_PERCENT,
        ),
        _ => false,
    };

    let ready = if !facts.cgroup_controllers.iter().any(|c| c == "memory") {
        (
            "False",
            REASON_MEMORY_CGROUP_MISSING,
            MESSAGE_MEMORY_CGROUP_MISSING.to_string(),
        )
    } else {
        let mut errors = Vec::new();
        if report.state_read_only {
            errors.push(
                "container runtime not ready: RuntimeReady=false reason:StateDirReadOnly \
                 message:the agent's state dir is on a read-only file system (a failing SD card \
                 is remounted read-only by the kernel): check the card and reboot"
                    .to_string(),
            );
        }
        if let Some(reason) = &report.runtime.runtime {
            errors.push(format!(
                "container runtime not ready: RuntimeReady=false reason:RuntimeNotReady message:{reason}"
            ));
        }
        if let Some(reason) = &report.runtime.network {
            errors.push(format!(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:{reason}"
            ));
        }
        match errors.len() {
            0 => (
                "True",
                "KubeletReady",
                "kubelet is posting ready status".to_string(),
            ),
            1 => ("False", "KubeletNotReady", errors.remove(0)),
            _ => (
                "False",
                "KubeletNotReady",
                format!("[{}]", errors.join(", ")),
            ),
        }
    };
    let pressure =
        |pressed: bool, yes: (&'static str, &'static str), no: (&'static str, &'static str)| {
            if pressed {
                ("True", yes.0, yes.1.to_string())
            } else {
                ("False", no.0, no.1.to_string())
            }
        };
    let wanted = [
        (
            "MemoryPressure",
            pressure(
                memory_pressure,
                (
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
            ),
        ),
        (
            "DiskPressure",
            pressure(
                disk_pressure,
                ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ),
        ),
        (
            "PIDPressure",
            pressure(
                pid_pressure,
                (
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
                (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ),
        ),
        ("Ready", ready),
    ];
    wanted
        .into_iter()
        .map(|(type_, (status, reason, message))| {
            let since = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map_or(now_unix, |c| c.last_transition_unix);
            ConditionReport {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_unix: since,
            }
        })
        .collect()
}

/// The kubelet's events for the conditions that changed from `before` to
/// `after`: `(reason, is_warning)`, e.g. `("NodeNotReady", false)`.
pub fn transitions(before: &[ConditionReport], after: &[ConditionReport]) -> Vec<&'static str> {
    let mut events = Vec::new();
    for condition in after {
        let was = before
            .iter()
            .find(|c| c.type_ == condition.type_)
            .map(|c| c.status.as_str());
        if was == Some(condition.status.as_str()) {
            continue;
        }
        let pressed = condition.status == "True";
        let event = match condition.type_.as_str() {
            "Ready" if was.is_none() => continue, // NodeReady at start is sent by the node loop
            "Ready" if pressed => "NodeReady",
            "Ready" => "NodeNotReady",
            "MemoryPressure" if pressed => "NodeHasInsufficientMemory",
            "MemoryPressure" if was.is_some() => "NodeHasSufficientMemory",
            "DiskPressure" if pressed => "NodeHasDiskPressure",
            "DiskPressure" if was.is_some() => "NodeHasNoDiskPressure",
            "PIDPressure" if pressed => "NodeHasInsufficientPID",
            "PIDPressure" if was.is_some() => "NodeHasSufficientPID",
            _ => continue,
        };
        events.push(event);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            cgroup_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
            ..NodeFacts::default()
        }
    }

    fn healthy() -> HealthReport {
        HealthReport {
            disk_available: Some(50 << 30),
            disk_total: Some(100 << 30),
            inodes_free: Some(900),
            inodes_total: Some(1000),
            memory_available: Some(1 << 30),
            pids_used: Some(300),
            pid_max: Some(32768),
            ..HealthReport::default()
        }
    }

    fn find<'a>(conditions: &'a [ConditionReport], type_: &str) -> &'a ConditionReport {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("{type_} in {conditions:?}"))
    }

    #[test]
    fn a_healthy_node_is_ready_without_pressure() {
        let got = conditions(&facts(), &healthy(), &[], 5);
        let types: Vec<&str> = got.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let ready = find(&got, "Ready");
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("True", "KubeletReady", "kubelet is posting ready status")
        );
        assert_eq!(
            find(&got, "DiskPressure").reason,
            "KubeletHasNoDiskPressure"
        );
        assert_eq!(find(&got, "MemoryPressure").status, "False");
        assert!(got.iter().all(|c| c.last_transition_unix == 5));
    }

    #[test]
    fn thresholds_raise_pressure_and_keep_transition_times() {
        let before = conditions(&facts(), &healthy(), &[], 5);
        let mut full = healthy();
        full.disk_available = Some(9 << 30); // 9 % of 100 GiB
        full.memory_available = Some(99 << 20);
        full.pids_used = Some(32_000);
        let after = conditions(&facts(), &full, &before, 9);
        let disk = find(&after, "DiskPressure");
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_str()),
            ("True", "KubeletHasDiskPressure")
        );
        assert_eq!(disk.last_transition_unix, 9);
        assert_eq!(find(&after, "MemoryPressure").status, "True");
        assert_eq!(
            find(&after, "PIDPressure").message,
            "kubelet has insufficient PID available"
        );
        // Ready did not change: its transition time stays.
        assert_eq!(find(&after, "Ready").last_transition_unix, 5);
        assert_eq!(
            transitions(&before, &after),
            [
                "NodeHasInsufficientMemory",
                "NodeHasDiskPressure",
                "NodeHasInsufficientPID"
            ]
        );
        let mut inodes = healthy();
        inodes.inodes_free = Some(40);
        assert_eq!(
            find(&conditions(&facts(), &inodes, &[], 1), "DiskPressure").status,
            "True"
        );
        let back = conditions(&facts(), &healthy(), &after, 12);
        assert_eq!(
            transitions(&after, &back),
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID"
            ]
        );
    }

    #[test]
    fn a_broken_runtime_or_network_or_read_only_disk_is_not_ready() {
        let before = conditions(&facts(), &healthy(), &[], 1);
        let mut broken = healthy();
        broken.runtime.network =
            Some("cannot set up the pod network: bridge bramble0: busy".into());
        let after = conditions(&facts(), &broken, &before, 2);
        let ready = find(&after, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "KubeletNotReady")
        );
        assert_eq!(
            ready.message,
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady \
             message:cannot set up the pod network: bridge bramble0: busy"
        );
        assert_eq!(transitions(&before, &after), ["NodeNotReady"]);
        broken.state_read_only = true;
        broken.runtime.runtime = Some("the shim directory /run/bramble is missing".into());
        let ready = find(&conditions(&facts(), &broken, &after, 3), "Ready").clone();
        assert!(
            ready.message.starts_with(
                "[container runtime not ready: RuntimeReady=false reason:StateDirReadOnly"
            ),
            "{}",
            ready.message
        );
        assert!(
            ready
                .message
                .contains("reason:RuntimeNotReady message:the shim directory"),
            "{}",
            ready.message
        );
        assert_eq!(ready.last_transition_unix, 2);
        let healed = conditions(&facts(), &healthy(), &after, 4);
        assert_eq!(transitions(&after, &healed), ["NodeReady"]);
    }

    #[test]
    fn the_memory_cgroup_fix_comes_first() {
        let mut no_memory = facts();
        no_memory.cgroup_controllers.retain(|c| c != "memory");
        let ready = find(&conditions(&no_memory, &healthy(), &[], 1), "Ready").clone();
        assert_eq!(ready.reason, REASON_MEMORY_CGROUP_MISSING);
        assert_eq!(ready.message, MESSAGE_MEMORY_CGROUP_MISSING);
    }

    #[test]
    fn check_reads_this_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = check(dir.path(), RuntimeHealth::default());
        assert!(report.disk_total.is_some_and(|t| t > 0));
        assert!(report.memory_available.is_some_and(|m| m > 0));
        assert!(report.pids_used.is_some_and(|p| p > 0));
        assert!(report.pid_max.is_some_and(|p| p > 0));
        assert!(!report.state_read_only);
    }
}

//! The OCI runtime spec (`config.json`) of one container, generated from the
//! pod's container spec merged with the image config the way Kubernetes and
//! Docker merge them:
//! - `command` replaces the image's Entrypoint (and then its Cmd is dropped),
//!   `args` replaces Cmd;
//! - env: the image's, then the container's (later wins), `$(VAR)` expanded;
//! - `workingDir` and `securityContext.runAsUser/Group` override the image's.
//!
//! Namespaces: new pid, mount, uts and ipc; network by path (the pod's netns)
//! or the host's for `hostNetwork`. Cgroups: an explicit path under the
//! `bramble` parent with memory and cpu limits, cpu shares from requests and
//! a pids limit. Capabilities: Docker's default set, adjusted by
//! `securityContext.capabilities`, or all of them when privileged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bramble_common::api::{Container, SecurityContext};
use serde_json::{json, Value};

use crate::images::ExecConfig;

/// Errors in a container's spec.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum SpecError {
    /// Neither the pod nor the image gives a command.
    #[error("container {0} has no command and its image no Entrypoint or Cmd; set `command`")]
    NoCommand(String),
    /// A resource quantity cannot be parsed.
    #[error("container {container}: invalid {resource} quantity {value:?}")]
    BadQuantity {
        /// Container name.
        container: String,
        /// `cpu` or `memory`.
        resource: String,
        /// The text.
        value: String,
    },
    /// The image's user is a name missing from the image's `/etc/passwd`.
    #[error("container {container}: user {user:?} is not in the image's /etc/passwd; use a numeric runAsUser")]
    UnknownUser {
        /// Container name.
        container: String,
        /// The user.
        user: String,
    },
    /// A capability name is unknown.
    #[error("container {container}: unknown capability {cap:?}")]
    UnknownCapability {
        /// Container name.
        container: String,
        /// The name.
        cap: String,
    },
}

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows (for privileged containers).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Syscalls Docker's default seccomp profile refuses to an unprivileged
/// container (with `EPERM`). Bramble's default profile allows the rest.
pub const SECCOMP_DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
];

/// A mount prepared by the runtime for a container.
#[derive(Debug, Clone, PartialEq)]
pub enum MountSource {
    /// Bind-mount a host path.
    Bind {
        /// Path on the host.
        source: PathBuf,
        /// Read-only.
        read_only: bool,
    },
    /// A fresh tmpfs (emptyDir with `medium: Memory`).
    Tmpfs {
        /// Size limit in bytes.
        size: Option<u64>,
    },
}

/// The seccomp filter a container runs under.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// No filter (`seccompProfile: Unconfined`, or seccomp turned off).
    Unconfined,
    /// The agent's default filter: it refuses what Docker's default profile
    /// refuses ([`SECCOMP_DENIED`]) and allows the rest. What a pod gets
    /// without a `seccompProfile`, and with `RuntimeDefault`.
    Default,
    /// A profile from the node (`Localhost`): the OCI spec's `linux.seccomp`.
    Profile(Value),
}

/// Everything the spec needs besides the pod's container.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    /// The container.
    pub container: &'a Container,
    /// The image's execution defaults.
    pub image: &'a ExecConfig,
    /// Environment from the pod (resolved `valueFrom`), in order.
    pub env: Vec<(String, String)>,
    /// Hostname (the pod name, or `spec.hostname`).
    pub hostname: String,
    /// The pod netns path, or `None` for host network.
    pub netns: Option<PathBuf>,
    /// `linux.cgroupsPath`.
    pub cgroups_path: String,
    /// Mounts: container path -> source.
    pub mounts: Vec<(String, MountSource)>,
    /// pids cgroup limit.
    pub pids_limit: i64,
    /// The container's seccomp filter.
    pub seccomp: Seccomp,
    /// Groups the process belongs to beside its primary GID
    /// (`securityContext.supplementalGroups`).
    pub supplemental_groups: Vec<u32>,
    /// The image's `/etc/passwd` content, to resolve a named user.
    pub passwd: Option<String>,
    /// The image's `/etc/group` content.
    pub group: Option<String>,
}

/// Parses a memory quantity to bytes (`64Mi`, `1G`, `1e6`, `128974848`).
pub fn parse_memory(q: &str) -> Option<u64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, m) in suffixes {
        if let Some(n) = q.strip_suffix(s) {
            let v: f64 = n.parse().ok()?;
            return (v >= 0.0).then_some((v * m).ceil() as u64);
        }
    }
    if let Some(n) = q.strip_suffix('m') {
        let v: f64 = n.parse().ok()?;
        return (v >= 0.0).then_some((v / 1000.0).ceil() as u64);
    }
    let v: f64 = q.parse().ok()?;
    (v >= 0.0).then_some(v.ceil() as u64)
}

/// Parses a cpu quantity to millicores (`500m`, `1`, `0.25`).
pub fn parse_cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    if let Some(n) = q.strip_suffix('m') {
        return n.parse::<u64>().ok();
    }
    let v: f64 = q.parse().ok()?;
    (v >= 0.0).then_some((v * 1000.0).ceil() as u64)
}

/// Expands `$(VAR)` references as Kubernetes does (`$$` escapes, unknown
/// references are left as written).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The process arguments: Kubernetes' merge of command/args with the image's
/// Entrypoint/Cmd.
pub fn merge_command(c: &Container, image: &ExecConfig) -> Vec<String> {
    let entry = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    match (c.command.is_empty(), c.args.is_empty()) {
        (false, _) => c.command.iter().chain(&c.args).cloned().collect(),
        (true, false) => entry.into_iter().chain(c.args.iter().cloned()).collect(),
        (true, true) => entry.into_iter().chain(cmd).collect(),
    }
}

/// The merged environment as `(name, value)` pairs in order, `$(VAR)` expanded.
pub fn merge_env(
    image: &ExecConfig,
    pod_env: &[(String, String)],
    hostname: &str,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| match out
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(e) => e.1 = v,
        None => out.push((k, v)),
    };
    set(
        &mut out,
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    for kv in image.env.iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            set(&mut out, k.into(), v.into());
        }
    }
    set(&mut out, "HOSTNAME".into(), hostname.into());
    for (k, v) in pod_env {
        let vars: BTreeMap<String, String> = out.iter().cloned().collect();
        set(&mut out, k.clone(), expand(v, &vars));
    }
    out
}

fn lookup(db: Option<&str>, name: &str, field: usize) -> Option<u32> {
    db?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(field)?.parse().ok())?
    })
}

/// Resolves the user: `runAsUser`/`runAsGroup`, else the image's `User`
/// (`uid`, `uid:gid`, `name`, `name:group`), else root.
pub fn resolve_user(inputs: &SpecInputs<'_>) -> Result<(u32, u32), SpecError> {
    let sc = inputs.container.security_context.as_ref();
    let image_user = inputs.image.user.clone().unwrap_or_default();
    let (u, g) = match image_user.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (image_user, None),
    };
    let unknown = |user: &str| SpecError::UnknownUser {
        container: inputs.container.name.clone(),
        user: user.to_string(),
    };
    let mut uid = 0;
    let mut gid = 0;
    if !u.is_empty() {
        match u.parse::<u32>() {
            Ok(n) => {
                uid = n;
                gid = n;
                if let Some(pw) = inputs.passwd.as_deref() {
                    if let Some(g) = pw.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.get(2) == Some(&u.as_str())).then(|| f.get(3)?.parse().ok())?
                    }) {
                        gid = g;
                    }
                }
            }
            Err(_) => {
                uid = lookup(inputs.passwd.as_deref(), &u, 2).ok_or_else(|| unknown(&u))?;
                gid = lookup(inputs.passwd.as_deref(), &u, 3).unwrap_or(0);
            }
        }
    }
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(inputs.group.as_deref(), &g, 2).ok_or_else(|| unknown(&g))?,
        };
    }
    if let Some(u) = sc.and_then(|s| s.run_as_user) {
        uid = u as u32;
        if sc.and_then(|s| s.run_as_group).is_none() && inputs.image.user.is_none() {
            gid = 0;
        }
    }
    if let Some(g) = sc.and_then(|s| s.run_as_group) {
        gid = g as u32;
    }
    Ok((uid, gid))
}

fn capabilities(name: &str, sc: Option<&SecurityContext>) -> Result<Vec<String>, SpecError> {
    if sc.and_then(|s| s.privileged).unwrap_or(false) {
        return Ok(ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect());
    }
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let norm = |c: &str| -> Result<String, SpecError> {
        let up = c.to_ascii_uppercase();
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if full == "CAP_ALL" || ALL_CAPABILITIES.contains(&full.as_str()) {
            Ok(full)
        } else {
            Err(SpecError::UnknownCapability {
                container: name.to_string(),
                cap: c.to_string(),
            })
        }
    };
    if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
        for d in &c.drop {
            let d = norm(d)?;
            if d == "CAP_ALL" {
                caps.clear();
            } else {
                caps.retain(|x| *x != d);
            }
        }
        for a in &c.add {
            let a = norm(a)?;
            if a == "CAP_ALL" {
                caps = ALL_CAPABILITIES.iter().map(|s| s.to_string()).collect();
            } else if !caps.contains(&a) {
                caps.push(a);
            }
        }
    }
    Ok(caps)
}

/// Builds the OCI runtime spec of a container as JSON.
pub fn build_spec(inputs: &SpecInputs<'_>) -> Result<Value, SpecError> {
    let c = inputs.container;
    let sc = c.security_context.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let env_pairs = merge_env(inputs.image, &inputs.env, &inputs.hostname);
    let vars: BTreeMap<String, String> = env_pairs.iter().cloned().collect();
    let args: Vec<String> = merge_command(c, inputs.image)
        .iter()
        .map(|a| expand(a, &vars))
        .collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand(c.name.clone()));
    }
    let env: Vec<String> = env_pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| inputs.image.working_dir.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/".into());
    let (uid, gid) = resolve_user(inputs)?;
    let caps = capabilities(&c.name, sc)?;

    // Resources.
    let bad = |resource: &str, value: &str| SpecError::BadQuantity {
        container: c.name.clone(),
        resource: resource.into(),
        value: value.into(),
    };
    let res = c.resources.clone().unwrap_or_default();
    let mut memory = json!({});
    if let Some(q) = res.limits.get("memory") {
        let bytes = parse_memory(&q.0).ok_or_else(|| bad("memory", &q.0))?;
        memory = json!({"limit": bytes});
    }
    let mut cpu = serde_json::Map::new();
    let cpu_request = match res.requests.get("cpu").or_else(|| res.limits.get("cpu")) {
        Some(q) => Some(parse_cpu_millis(&q.0).ok_or_else(|| bad("cpu", &q.0))?),
        None => None,
    };
    // Kubernetes: shares = millicores * 1024 / 1000, at least 2.
    let shares = cpu_request.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2);
    cpu.insert("shares".into(), json!(shares));
    if let Some(q) = res.limits.get("cpu") {
        let m = parse_cpu_millis(&q.0).ok_or_else(|| bad("cpu", &q.0))?;
        let period: u64 = 100_000;
        cpu.insert("period".into(), json!(period));
        cpu.insert("quota".into(), json!((m * period / 1000).max(1000)));
    }
    let devices = if privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"},
        ])
    };

    // Namespaces.
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "uts"}),
        json!({"type": "ipc"}),
    ];
    if let Some(ns) = &inputs.netns {
        namespaces.push(json!({"type": "network", "path": ns}));
    }

    // Mounts.
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged {"rw"} else {"ro"}]}),
    ];
    for (dest, src) in &inputs.mounts {
        mounts.push(match src {
            MountSource::Bind { source, read_only } => json!({
                "destination": dest, "type": "bind", "source": source,
                "options": ["rbind", "rprivate", if *read_only {"ro"} else {"rw"}],
            }),
            MountSource::Tmpfs { size } => {
                let mut opts = vec!["nosuid".to_string(), "nodev".into(), "mode=1777".into()];
                if let Some(s) = size {
                    opts.push(format!("size={s}"));
                }
                json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts})
            }
        });
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": inputs.cgroups_path,
        "resources": {
            "devices": devices,
            "memory": memory,
            "cpu": cpu,
            "pids": {"limit": inputs.pids_limit},
        },
    });
    if !privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap"
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }
    // A Localhost profile applies to privileged containers too, as in
    // Kubernetes; the default filter does not (Docker's rule).
    match &inputs.seccomp {
        Seccomp::Default if !privileged => {
            linux["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{
                    "names": SECCOMP_DENIED,
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 1,
                }],
            });
        }
        Seccomp::Profile(profile) => linux["seccomp"] = profile.clone(),
        Seccomp::Default | Seccomp::Unconfined => {}
    }

    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": inputs.supplemental_groups},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
        },
        "root": {
            "path": "rootfs",
            "readonly": sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        },
        "hostname": inputs.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    // Kubernetes sets no_new_privs only when allowPrivilegeEscalation is
    // false (the kubelet's AddNoNewPrivileges). The key is left out
    // otherwise, not set to false: libcontainer installs a seccomp filter
    // before it drops capabilities only when the key is absent.
    if sc.and_then(|s| s.allow_privilege_escalation) == Some(false) {
        spec["process"]["noNewPrivileges"] = json!(true);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_memory("64Mi"), Some(64 << 20));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1000"), Some(1000));
        assert_eq!(parse_memory("x"), None);
        assert_eq!(parse_cpu_millis("250m"), Some(250));
        assert_eq!(parse_cpu_millis("1.5"), Some(1500));
    }

    #[test]
    fn command_merge_follows_kubernetes() {
        let image = ExecConfig {
            entrypoint: Some(vec!["/ep".into()]),
            cmd: Some(vec!["default".into()]),
            ..Default::default()
        };
        let mut c = Container::default();
        assert_eq!(merge_command(&c, &image), vec!["/ep", "default"]);
        c.args = vec!["a".into()];
        assert_eq!(merge_command(&c, &image), vec!["/ep", "a"]);
        c.command = vec!["/bin/x".into()];
        assert_eq!(merge_command(&c, &image), vec!["/bin/x", "a"]);
    }

    #[test]
    fn env_merge_and_expansion() {
        let image = ExecConfig {
            env: Some(vec!["A=1".into(), "PATH=/bin".into()]),
            ..Default::default()
        };
        let env = merge_env(
            &image,
            &[
                ("A".into(), "2".into()),
                ("B".into(), "$(A)-$$(A)-$(NOPE)".into()),
            ],
            "h",
        );
        let m: BTreeMap<_, _> = env.into_iter().collect();
        assert_eq!(m["A"], "2");
        assert_eq!(m["B"], "2-$(A)-$(NOPE)");
        assert_eq!(m["PATH"], "/bin");
        assert_eq!(m["HOSTNAME"], "h");
    }
}

//! The per-container shim: `bramble-agent shim run CONFIG` (hidden).
//!
//! The agent never creates containers itself (libcontainer clones and runs
//! Rust code in the child, which is unsafe in a multi-threaded process).
//! Instead it spawns its own binary as a shim. The shim, single-threaded:
//! 1. forks; the first process waits for the second to report (`ok PID` or
//!    `err MESSAGE` on a pipe), prints it and exits, so the agent knows at
//!    once whether the container started;
//! 2. the second process calls `setsid`, points its own stdio at `shim.log`,
//!    creates the container with libcontainer (its init is the shim's
//!    child), starts it, records `running` in the status file;
//! 3. drains the container's stdout and stderr into the rotating log,
//!    reaps the init process, reads the memory cgroup's OOM kill count,
//!    deletes the libcontainer container (cgroup and state) and finally
//!    writes the exit status atomically: exit code, signal, OOMKilled,
//!    start and finish times. Then it exits.
//!
//! Nothing ties the shim to the agent: the agent can be restarted, upgraded
//! or killed and the container keeps running and logging.
//!
//! `bramble-agent shim exec PID -- CMD...` runs a command inside a running
//! container's namespaces and cgroups (exec probes); `bramble-agent shim
//! session ...` runs an interactive one (`kubectl exec`, see
//! [`super::exec`]).

use std::ffi::{CString, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::logs::{LineSplitter, LogWriter, Stream};
use super::sys;
use crate::images::write_atomic;

/// What the agent tells a shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// libcontainer container ID.
    pub id: String,
    /// libcontainer state root.
    pub root: PathBuf,
    /// OCI bundle (holds `config.json` and `rootfs`).
    pub bundle: PathBuf,
    /// Where the shim writes [`ShimStatus`].
    pub status_file: PathBuf,
    /// The container's log file.
    pub log_path: PathBuf,
    /// Rotation size.
    pub log_max_size: u64,
    /// Files kept.
    pub log_max_files: u32,
    /// `linux.cgroupsPath`, to read OOM kills.
    pub cgroups_path: String,
    /// The shim's own diagnostics.
    pub shim_log: PathBuf,
}

/// The state of a container as its shim records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShimState {
    /// The container runs.
    Running,
    /// It ended; exit fields are set.
    Exited,
    /// It could not be created or started.
    Failed,
}

/// The status file a shim writes (atomically).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimStatus {
    /// State.
    pub state: ShimState,
    /// PID of the shim.
    pub shim_pid: i32,
    /// Host PID of the container's init.
    pub pid: Option<i32>,
    /// RFC 3339 start time.
    pub started_at: Option<String>,
    /// RFC 3339 end time.
    pub finished_at: Option<String>,
    /// Exit code (128 + signal when killed by one).
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// The memory cgroup killed it.
    pub oom_killed: bool,
    /// Why it failed.
    pub message: Option<String>,
}

impl ShimStatus {
    /// Reads a status file.
    pub fn read(path: &Path) -> Option<ShimStatus> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    fn write(&self, path: &Path) -> io::Result<()> {
        let data = serde_json::to_vec(self).map_err(io::Error::other)?;
        write_atomic(path, &data)
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Entry point of `bramble-agent shim ...`; returns the process exit code.
/// Must be called before the process starts any thread.
pub fn shim_main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.first().map(String::as_str) {
        Some("run") if args.len() == 2 => run(Path::new(&args[1])),
        Some("session") => super::exec::session_main(&args[1..]),
        Some("exec") if args.len() >= 4 && args[2] == "--" => match args[1].parse::<i32>() {
            Ok(pid) => exec_in(pid, &args[3..]),
            Err(_) => {
                eprintln!("shim exec: invalid pid {}", args[1]);
                2
            }
        },
        _ => {
            eprintln!("usage: bramble-agent shim run CONFIG | shim exec PID -- CMD...");
            2
        }
    }
}

fn run(config_path: &Path) -> i32 {
    let config: ShimConfig = match fs::read(config_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shim: cannot read {}: {e}", config_path.display());
            return 2;
        }
    };
    let (report_r, report_w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shim: pipe: {e}");
            return 1;
        }
    };
    match sys::fork_single_threaded() {
        Err(e) => {
            eprintln!("shim: fork: {e}");
            1
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(report_w);
            let mut msg = String::new();
            let _ = fs::File::from(report_r).read_to_string(&mut msg);
            if let Some(pid) = msg.strip_prefix("ok ") {
                println!("{}", pid.trim());
                0
            } else {
                eprintln!("{}", msg.strip_prefix("err ").unwrap_or(&msg).trim());
                1
            }
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(report_r);
            let code = supervise(&config, report_w);
            // Never return into the caller's stack frames twice.
            std::process::exit(code)
        }
    }
}

fn redirect_stdio(shim_log: &Path) -> io::Result<()> {
    let null = fs::File::open("/dev/null")?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(shim_log)?;
    nix::unistd::dup2(null.as_raw_fd(), 0)?;
    nix::unistd::dup2(log.as_raw_fd(), 1)?;
    nix::unistd::dup2(log.as_raw_fd(), 2)?;
    Ok(())
}

fn supervise(config: &ShimConfig, report: OwnedFd) -> i32 {
    let mut report = fs::File::from(report);
    let shim_pid = std::process::id() as i32;
    let fail = |report: &mut fs::File, message: String| {
        let status = ShimStatus {
            state: ShimState::Failed,
            shim_pid,
            pid: None,
            started_at: None,
            finished_at: Some(now()),
            exit_code: None,
            signal: None,
            oom_killed: false,
            message: Some(message.clone()),
        };
        let _ = status.write(&config.status_file);
        let _ = write!(report, "err {message}");
        1
    };
    if let Err(e) = nix::unistd::setsid() {
        return fail(&mut report, format!("setsid: {e}"));
    }
    if let Err(e) = redirect_stdio(&config.shim_log) {
        return fail(&mut report, format!("redirect stdio: {e}"));
    }
    // libcontainer reports details through tracing: keep them in shim.log.
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let mut log = match LogWriter::open(&config.log_path, config.log_max_size, config.log_max_files)
    {
        Ok(l) => l,
        Err(e) => {
            return fail(
                &mut report,
                format!("open log {}: {e}", config.log_path.display()),
            )
        }
    };
    let pipes = (|| -> nix::Result<_> {
        let out = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let err = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok((out, err))
    })();
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => return fail(&mut report, format!("pipe: {e}")),
    };
    let null = match fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return fail(&mut report, format!("/dev/null: {e}")),
    };
    let started = create_and_start(config, OwnedFd::from(null), out_w, err_w);
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            cleanup_container(config);
            return fail(&mut report, e);
        }
    };
    let started_at = now();
    let mut status = ShimStatus {
        state: ShimState::Running,
        shim_pid,
        pid: Some(pid.as_raw()),
        started_at: Some(started_at.clone()),
        finished_at: None,
        exit_code: None,
        signal: None,
        oom_killed: false,
        message: None,
    };
    if let Err(e) = status.write(&config.status_file) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
        cleanup_container(config);
        return fail(&mut report, format!("write status: {e}"));
    }
    let _ = write!(report, "ok {}", pid.as_raw());
    drop(report);

    let wait = drain_and_wait(pid, out_r, err_r, &mut log);
    let oom_kills = read_oom_kills(&config.cgroups_path);
    cleanup_container(config);
    let (exit_code, signal) = match wait {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    status.state = ShimState::Exited;
    status.finished_at = Some(now());
    status.exit_code = Some(exit_code);
    status.signal = signal;
    status.oom_killed = oom_kills > 0 && signal == Some(libc::SIGKILL);
    if let Err(e) = status.write(&config.status_file) {
        eprintln!("shim: cannot write status: {e}");
        return 1;
    }
    0
}

fn create_and_start(
    config: &ShimConfig,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Pid, String> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let mut container = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.root)
        .map_err(|e| format!("container root: {e}"))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .validate_id()
        .map_err(|e| format!("container id: {e}"))?
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create container: {e}"))?;
    container
        .start()
        .map_err(|e| format!("start container: {e}"))?;
    let pid = container
        .pid()
        .ok_or_else(|| "container has no pid after start".to_string())?;
    Ok(Pid::from_raw(pid.as_raw()))
}

/// Removes the libcontainer state and cgroup of the shim's container.
fn cleanup_container(config: &ShimConfig) {
    let dir = config.root.join(&config.id);
    if let Ok(mut c) = libcontainer::container::Container::load(dir.clone()) {
        if let Err(e) = c.delete(true) {
            eprintln!("shim: delete container: {e}");
        }
    }
    let _ = fs::remove_dir_all(dir);
}

fn drain_and_wait(pid: Pid, out: OwnedFd, err: OwnedFd, log: &mut LogWriter) -> WaitStatus {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut streams = [
        (
            fs::File::from(out),
            Stream::Stdout,
            LineSplitter::default(),
            true,
        ),
        (
            fs::File::from(err),
            Stream::Stderr,
            LineSplitter::default(),
            true,
        ),
    ];
    let mut exited: Option<WaitStatus> = None;
    let mut grace_polls = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if exited.is_none() {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => exited = Some(s),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => exited = Some(WaitStatus::Exited(pid, 255)),
            }
        }
        let open: Vec<usize> = (0..streams.len()).filter(|i| streams[*i].3).collect();
        if open.is_empty() {
            if let Some(s) = exited {
                return s;
            }
            // Both pipes closed but init still alive: just wait for it.
            return waitpid(pid, None).unwrap_or(WaitStatus::Exited(pid, 255));
        }
        if exited.is_some() {
            grace_polls += 1;
            if grace_polls > 20 {
                // Something outside the pid namespace holds the pipe open.
                return exited.unwrap_or(WaitStatus::Exited(pid, 255));
            }
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .map(|i| PollFd::new(streams[*i].0.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
            fds.iter()
                .map(|f| f.revents().map(|r| !r.is_empty()).unwrap_or(false))
                .collect()
        };
        for (k, i) in open.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let (file, stream, splitter, is_open) = &mut streams[*i];
            match file.read(&mut buf) {
                Ok(0) => {
                    splitter.finish(|l, p| {
                        let _ = log.write_record(*stream, l, p);
                    });
                    *is_open = false;
                }
                Ok(n) => splitter.feed(&buf[..n], |l, p| {
                    let _ = log.write_record(*stream, l, p);
                }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => *is_open = false,
            }
        }
    }
}

/// Number of OOM kills in the container's memory cgroup (v1
/// `memory.oom_control`, v2 `memory.events`).
pub fn read_oom_kills(cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let candidates = [
        format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
        format!("/sys/fs/cgroup/{rel}/memory.events"),
    ];
    for c in candidates {
        if let Ok(text) = fs::read_to_string(&c) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("oom_kill ") {
                    return v.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// `shim exec`: enter the namespaces and cgroups of `pid` and run `cmd`
/// there as the container's user with its environment; exit with its code.
fn exec_in(pid: i32, cmd: &[String]) -> i32 {
    match exec_in_inner(pid, cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shim exec: {e}");
            126
        }
    }
}

/// What a process needs to run as the container's own: its environment and
/// its user, read from the container's init.
#[derive(Debug, Clone)]
pub(crate) struct Entered {
    /// The init's environment.
    pub env: Vec<CString>,
    /// Its user ID.
    pub uid: u32,
    /// Its group ID.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
}

/// Join the cgroups and namespaces (ipc, uts, net, pid, mount) of the
/// container whose init is `pid`, as `runc exec` does. Only for a
/// single-threaded process (the shim): `setns` of the mount namespace is
/// refused to multi-threaded ones, and the pid namespace applies to children.
pub(crate) fn enter_container(pid: i32) -> io::Result<Entered> {
    use nix::sched::{setns, CloneFlags};
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // Join the container's cgroups first (paths are host-relative here).
    let cgroups = fs::read_to_string(proc_dir.join("cgroup"))?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
        let (Some(ctrls), Some(path)) = (ctrls, path) else {
            continue;
        };
        let base = if ctrls.is_empty() {
            if Path::new("/sys/fs/cgroup/unified").is_dir() {
                "/sys/fs/cgroup/unified".to_string()
            } else {
                "/sys/fs/cgroup".to_string()
            }
        } else {
            let first = ctrls.split(',').next().unwrap_or(ctrls);
            let first = first.strip_prefix("name=").unwrap_or(first);
            let joined = format!("/sys/fs/cgroup/{ctrls}");
            if Path::new(&joined).is_dir() {
                joined
            } else {
                format!("/sys/fs/cgroup/{first}")
            }
        };
        let procs = format!("{base}{path}/cgroup.procs");
        let _ = fs::write(&procs, std::process::id().to_string());
    }
    let environ = fs::read(proc_dir.join("environ"))?;
    let env: Vec<CString> = environ
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| CString::new(s).ok())
        .collect();
    let status = fs::read_to_string(proc_dir.join("status"))?;
    let field = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = |key: &str| field(key).first().copied().unwrap_or(0);
    let (uid, gid) = (first("Uid:"), first("Gid:"));
    let groups = field("Groups:");
    let mut nss = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let f = fs::File::open(proc_dir.join("ns").join(name))?;
        nss.push((f, flag));
    }
    for (f, flag) in &nss {
        // Same namespace as ours (host network): setns is harmless.
        setns(f.as_fd(), *flag).map_err(io::Error::from)?;
    }
    Ok(Entered {
        env,
        uid,
        gid,
        groups,
    })
}

fn exec_in_inner(pid: i32, cmd: &[String]) -> io::Result<i32> {
    let Entered { env, uid, gid, .. } = enter_container(pid)?;
    match sys::fork_single_threaded()? {
        nix::unistd::ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        },
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::chdir("/");
            let _ = nix::unistd::setgroups(&[]);
            let _ = nix::unistd::setgid(nix::unistd::Gid::from_raw(gid));
            let _ = nix::unistd::setuid(nix::unistd::Uid::from_raw(uid));
            let args: Vec<CString> = cmd
                .iter()
                .filter_map(|a| CString::new(a.as_bytes()).ok())
                .collect();
            let Some(prog) = args.first() else {
                std::process::exit(126);
            };
            // execvpe searches PATH from the given environment.
            let path = env
                .iter()
                .find_map(|e| e.to_str().ok()?.strip_prefix("PATH=").map(str::to_string))
                .unwrap_or_else(|| {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                });
            if !prog.as_bytes().contains(&b'/') {
                for dir in path.split(':') {
                    if let Ok(full) = CString::new(format!("{dir}/{}", prog.to_string_lossy())) {
                        let _ = nix::unistd::execve(&full, &args, &env);
                    }
                }
            } else {
                let _ = nix::unistd::execve(prog, &args, &env);
            }
            eprintln!("shim exec: cannot execute {}", prog.to_string_lossy());
            std::process::exit(127);
        }
    }
}

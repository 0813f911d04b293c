//! Interactive commands inside a running container (`kubectl exec`).
//!
//! The agent never enters a namespace itself: it spawns its own binary as
//! `bramble-agent shim session PID CWD tty|pipes CONTROL_FD -- CMD...`, a
//! single-threaded helper that joins the container's cgroups and
//! namespaces ([`super::shim::enter_container`]) the way `runc exec` does,
//! and forks the command as the container's user, with its environment, in
//! the container's working directory, as the leader of a new session:
//! - `pipes`: the command gets the helper's stdin, stdout and stderr (the
//!   agent's pipes) directly; the helper keeps none of them;
//! - `tty`: the helper opens a terminal from the container's `/dev/ptmx`,
//!   makes it the command's controlling terminal, and relays stdin to it
//!   and its output to stdout.
//!
//! The control pipe (`CONTROL_FD`) carries `W H` lines (terminal sizes).
//! When it closes (the agent ended the session, or died), the helper kills
//! the command's process group and exits. The helper exits with the
//! command's exit code (128 + signal), 126 when it cannot enter the
//! container, 127 when the command is not found. The command is killed if
//! the helper dies (`PR_SET_PDEATHSIG`). The agent sweeps whatever is left
//! of the command's session when it ends one ([`kill_session`]).

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::shim::{enter_container, Entered};
use super::sys;

/// Where and how to run a command in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// Host PID of the container's init.
    pub pid: i32,
    /// The container's working directory (`process.cwd` of its spec).
    pub cwd: String,
    /// The `bramble-agent` binary run as the helper.
    pub shim_binary: PathBuf,
}

/// Exit code when the helper cannot enter the container.
pub const EXIT_CANNOT_ENTER: i32 = 126;
/// Exit code when the command does not exist.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The helper's command line for `cmd` in `target`.
pub fn session_args(
    target: &ExecTarget,
    tty: bool,
    control_fd: i32,
    cmd: &[String],
) -> Vec<String> {
    let mut args = vec![
        "shim".to_string(),
        "session".to_string(),
        target.pid.to_string(),
        target.cwd.clone(),
        if tty { "tty" } else { "pipes" }.to_string(),
        control_fd.to_string(),
        "--".to_string(),
    ];
    args.extend(cmd.iter().cloned());
    args
}

/// Entry point of `shim session PID CWD tty|pipes CONTROL_FD -- CMD...`
/// (`args` without `session`); returns the exit code.
pub fn session_main(args: &[String]) -> i32 {
    let parsed = match args {
        [pid, cwd, mode, control, dashes, cmd @ ..]
            if dashes == "--" && !cmd.is_empty() && (mode == "tty" || mode == "pipes") =>
        {
            pid.parse::<i32>()
                .ok()
                .zip(control.parse::<i32>().ok().filter(|fd| *fd > 2))
                .map(|(pid, control)| (pid, cwd.as_str(), mode == "tty", control, cmd))
        }
        _ => None,
    };
    let Some((pid, cwd, tty, control, cmd)) = parsed else {
        eprintln!("usage: bramble-agent shim session PID CWD tty|pipes CONTROL_FD -- CMD...");
        return 2;
    };
    // The agent passed this descriptor number on purpose; nothing else in
    // this fresh process uses it.
    let control = match dup_owned(control) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("shim session: control descriptor: {e}");
            return 2;
        }
    };
    match session(pid, cwd, tty, control, cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cannot enter the container: {e}");
            EXIT_CANNOT_ENTER
        }
    }
}

/// Take ownership of descriptor `fd` by duplicating it (and closing the
/// original), without `unsafe`.
fn dup_owned(fd: i32) -> io::Result<OwnedFd> {
    let copy =
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(io::Error::from)?;
    let _ = nix::unistd::close(fd);
    Ok(sys::own_fresh_fd(copy))
}

fn session(pid: i32, cwd: &str, tty: bool, control: OwnedFd, cmd: &[String]) -> io::Result<i32> {
    let entered = enter_container(pid)?;
    let pty = if tty { Some(sys::open_pty()?) } else { None };
    let shim = nix::unistd::getpid();
    match sys::fork_single_threaded()? {
        nix::unistd::ForkResult::Child => {
            drop(control);
            let slave = pty.map(|(master, slave)| {
                drop(master);
                slave
            });
            child(shim, cwd, slave.as_deref(), &entered, cmd)
        }
        nix::unistd::ForkResult::Parent { child } => match pty {
            Some((master, _)) => relay_tty(child, master, control),
            None => {
                // The command has the pipes; keep none of them.
                if let Ok(null) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                {
                    for fd in 0..3 {
                        let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                    }
                }
                supervise(child, control)
            }
        },
    }
}

/// The command's side of the fork: never returns.
fn child(shim: Pid, cwd: &str, slave: Option<&Path>, entered: &Entered, cmd: &[String]) -> ! {
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The helper may have died before the line above: then the child was
    // given to another parent. The helper sits outside the container's pid
    // namespace, where its PID reads as 0.
    let parent = nix::unistd::getppid();
    if parent != shim && parent.as_raw() != 0 {
        std::process::exit(137);
    }
    if let Some(slave) = slave {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(slave)
        {
            Ok(terminal) => {
                let _ = sys::set_controlling_terminal(terminal.as_fd());
                for fd in 0..3 {
                    let _ = nix::unistd::dup2(terminal.as_raw_fd(), fd);
                }
            }
            Err(e) => {
                eprintln!("cannot open the terminal {}: {e}", slave.display());
                std::process::exit(EXIT_CANNOT_ENTER);
            }
        }
    }
    if nix::unistd::chdir(cwd).is_err() {
        let _ = nix::unistd::chdir("/");
    }
    let groups: Vec<nix::unistd::Gid> = entered
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let _ = nix::unistd::setgroups(&groups);
    let _ = nix::unistd::setgid(nix::unistd::Gid::from_raw(entered.gid));
    let _ = nix::unistd::setuid(nix::unistd::Uid::from_raw(entered.uid));
    let args: Vec<CString> = cmd
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let Some(prog) = args.first() else {
        std::process::exit(EXIT_NOT_FOUND);
    };
    let env = &entered.env;
    let name = prog.to_string_lossy().into_owned();
    let mut denied = false;
    if name.contains('/') {
        let Err(e) = nix::unistd::execve(prog, &args, env);
        denied = e == nix::errno::Errno::EACCES;
    } else {
        let path = env
            .iter()
            .find_map(|e| e.to_str().ok()?.strip_prefix("PATH=").map(str::to_string))
            .unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
        for dir in path.split(':') {
            if let Ok(full) = CString::new(format!("{dir}/{name}")) {
                if let Err(nix::errno::Errno::EACCES) = nix::unistd::execve(&full, &args, env) {
                    denied = true;
                }
            }
        }
    }
    if denied {
        eprintln!("exec: {name:?}: permission denied");
        std::process::exit(EXIT_CANNOT_ENTER);
    }
    if name.contains('/') {
        eprintln!("exec: {name:?}: no such file or directory");
    } else {
        eprintln!("exec: {name:?}: executable file not found in $PATH");
    }
    std::process::exit(EXIT_NOT_FOUND);
}

fn code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn reap(child: Pid) -> Option<i32> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(status) => code_of(status),
        Err(nix::errno::Errno::ECHILD) => Some(EXIT_CANNOT_ENTER),
        Err(_) => None,
    }
}

fn kill_and_reap(child: Pid) -> i32 {
    let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
    let _ = kill(child, Signal::SIGKILL);
    loop {
        match waitpid(child, None) {
            Ok(status) => {
                if let Some(code) = code_of(status) {
                    return code;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 137,
        }
    }
}

/// Reads `W H` lines from the control pipe; `None` once it closed.
#[derive(Default)]
struct Control {
    pending: Vec<u8>,
}

impl Control {
    fn read(&mut self, fd: BorrowedFd<'_>) -> Option<Vec<(u16, u16)>> {
        let mut buf = [0u8; 256];
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => None,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                let mut sizes = Vec::new();
                while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line);
                    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>());
                    if let (Some(Ok(w)), Some(Ok(h))) = (parts.next(), parts.next()) {
                        sizes.push((w, h));
                    }
                }
                Some(sizes)
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => Some(Vec::new()),
            Err(_) => None,
        }
    }
}

fn tick() -> PollTimeout {
    PollTimeout::from(100u8)
}

/// `pipes` mode: wait for the command; kill it when the control pipe closes.
fn supervise(child: Pid, control: OwnedFd) -> io::Result<i32> {
    let mut reader = Control::default();
    loop {
        if let Some(code) = reap(child) {
            return Ok(code);
        }
        let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, tick()) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {
                if reader.read(control.as_fd()).is_none() {
                    return Ok(kill_and_reap(child));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `tty` mode: relay stdin to the terminal and the terminal to stdout,
/// apply sizes from the control pipe, until the command ends.
fn relay_tty(child: Pid, master: OwnedFd, control: OwnedFd) -> io::Result<i32> {
    let mut reader = Control::default();
    let mut stdin_open = true;
    let mut terminal = std::fs::File::from(master);
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; 32 * 1024];
    let mut exit: Option<i32> = None;
    let mut drain_deadline: Option<std::time::Instant> = None;
    loop {
        if exit.is_none() {
            exit = reap(child);
            if exit.is_some() {
                drain_deadline = Some(std::time::Instant::now() + Duration::from_millis(500));
            }
        }
        if drain_deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        let stdin = io::stdin();
        let mut fds = vec![
            PollFd::new(terminal.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
        ];
        if stdin_open && exit.is_none() {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, tick()) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|fd| fd.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (term_ready, control_ready, stdin_ready) = (ready(0), ready(1), ready(2));
        drop(fds);
        if term_ready {
            match terminal.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        return Ok(kill_and_reap(child));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EIO: every process closed the terminal.
                Err(_) => {
                    if exit.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        if control_ready {
            match reader.read(control.as_fd()) {
                None => return Ok(kill_and_reap(child)),
                Some(sizes) => {
                    for (w, h) in sizes {
                        let _ = sys::set_window_size(terminal.as_fd(), w, h);
                    }
                }
            }
        }
        if stdin_ready {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if terminal.write_all(&buf[..n]).is_err() {
                        stdin_open = false;
                    }
                }
            }
        }
    }
    Ok(match exit {
        Some(code) => code,
        None => loop {
            match waitpid(child, None) {
                Ok(status) => {
                    if let Some(code) = code_of(status) {
                        break code;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break EXIT_CANNOT_ENTER,
            }
        },
    })
}

/// Kill every process of the session led by `leader` (a host PID), as
/// found in `/proc`: what an ended `kubectl exec` left running in the
/// container (background jobs of its shell). Returns how many were killed.
pub fn kill_session(leader: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if session_of(pid) == Some(leader) && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// The session ID of `pid` (field 6 of `/proc/PID/stat`).
pub fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// The children of `pid` (`/proc/PID/task/PID/children`).
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn control_lines_are_parsed_across_reads() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut control = Control::default();
        nix::unistd::write(&w, b"80 2").unwrap();
        assert_eq!(control.read(r.as_fd()), Some(vec![]));
        nix::unistd::write(&w, b"4\nbad line\n100 30\n").unwrap();
        assert_eq!(control.read(r.as_fd()), Some(vec![(80, 24), (100, 30)]));
        drop(w);
        assert_eq!(control.read(r.as_fd()), None);
    }

    #[test]
    fn session_of_reads_our_own_session() {
        let me = std::process::id() as i32;
        assert_eq!(
            session_of(me),
            Some(nix::unistd::getsid(None).unwrap().as_raw())
        );
    }

    #[test]
    fn args_round_trip() {
        let target = ExecTarget {
            pid: 42,
            cwd: "/srv".into(),
            shim_binary: "/bin/agent".into(),
        };
        let args = session_args(&target, true, 9, &["sh".into(), "-c".into(), "x".into()]);
        assert_eq!(
            args[..7],
            ["shim", "session", "42", "/srv", "tty", "9", "--"]
        );
    }
}

//! Network namespaces as files, and running code inside one.
//!
//! A namespace is made without forking: a short-lived thread
//! `unshare(CLONE_NEWNET)`s and bind-mounts `/proc/thread-self/ns/net` onto an
//! empty file, which keeps the namespace alive after the thread exits. Work
//! inside a namespace ([`in_netns`], [`with_netlink`]) always runs on a new OS
//! thread that `setns`es and then exits, so no thread of the caller (and never
//! a tokio worker) changes namespace. The runtime uses [`create_netns`] and
//! [`delete_netns`] for pod sandboxes at `{run_dir}/netns/{pod-uid}`.

use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, FsType};
use rtnetlink::Handle;

/// `NSFS_MAGIC` from `linux/magic.h`: the file system of namespace files.
const NSFS_MAGIC: FsType = FsType(0x6e73_6673);

/// Errors of namespace handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// A system call on a namespace file failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Netlink(std::io::Error),
    /// The tokio runtime for the namespace thread could not be built.
    #[error("cannot start a runtime for namespace work: {0}")]
    Runtime(std::io::Error),
    /// The thread could not be spawned.
    #[error("cannot spawn a thread for namespace work: {0}")]
    Spawn(std::io::Error),
    /// The closure run inside the namespace panicked.
    #[error("work inside network namespace {0} panicked")]
    Panicked(String),
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> NetnsError + 'a {
    move |source| NetnsError::Sys {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` is a bind-mounted namespace file.
pub fn is_netns(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Creates a new, empty network namespace kept alive by a bind mount at
/// `path` (parent directories are created). If `path` already holds a
/// namespace it is kept as it is, so calling this again is harmless.
pub fn create_netns(path: &Path) -> Result<(), NetnsError> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| NetnsError::Io {
            op: "create directory for",
            path: path.to_path_buf(),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| NetnsError::Io {
            op: "create namespace file",
            path: path.to_path_buf(),
            source,
        })?;
    let result = run_on_thread(path, || -> Result<(), NetnsError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare network namespace for", path))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind-mount network namespace onto", path))
    })
    .and_then(|r| r);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Deletes the namespace at `path`: detaches the bind mount and removes the
/// file. The namespace itself goes away once nothing else holds it (its veth
/// ends are destroyed with it). Missing files are not an error.
pub fn delete_netns(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(sys("unmount network namespace", path)(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            op: "remove namespace file",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Runs `f` on a short-lived OS thread, returning its result; `label` names
/// the thread's namespace in a panic message.
fn run_on_thread<R: Send>(label: &Path, f: impl FnOnce() -> R + Send) -> Result<R, NetnsError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("bramble-netns".into())
            .spawn_scoped(scope, f)
            .map_err(NetnsError::Spawn)?;
        handle
            .join()
            .map_err(|_| NetnsError::Panicked(label.display().to_string()))
    })
}

/// Runs `f` on a new OS thread that first enters the network namespace at
/// `netns` (or stays in the caller's namespace when `None`), and returns its
/// result. Sockets opened by `f` belong to that namespace and stay there when
/// used from other threads afterwards.
pub fn in_netns<R: Send>(
    netns: Option<&Path>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, NetnsError> {
    let label = netns.unwrap_or(Path::new("(current)"));
    run_on_thread(label, || -> Result<R, NetnsError> {
        if let Some(path) = netns {
            let file = std::fs::File::open(path).map_err(|source| NetnsError::Io {
                op: "open network namespace",
                path: path.to_path_buf(),
                source,
            })?;
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(sys("enter network namespace", path))?;
        }
        Ok(f())
    })?
}

/// Runs the async netlink work `f` inside the namespace at `netns` (or the
/// caller's when `None`): on a new OS thread that enters the namespace, opens
/// an rtnetlink connection there and drives it with a current-thread runtime.
pub fn with_netlink<R, Fut>(
    netns: Option<&Path>,
    f: impl FnOnce(Handle) -> Fut + Send,
) -> Result<R, NetnsError>
where
    R: Send,
    Fut: Future<Output = R>,
{
    in_netns(netns, || -> Result<R, NetnsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(NetnsError::Runtime)?;
        runtime.block_on(async {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(NetnsError::Netlink)?;
            let driver = tokio::spawn(connection);
            let result = f(handle).await;
            driver.abort();
            Ok(result)
        })
    })?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn netns_inode(path: Option<&Path>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        in_netns(path, || {
            std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
        })
        .unwrap()
    }

    #[test]
    fn create_enter_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns");
        create_netns(&path).unwrap();
        create_netns(&path).unwrap();
        assert!(is_netns(&path));
        assert_ne!(netns_inode(Some(&path)), netns_inode(None));
        delete_netns(&path).unwrap();
        delete_netns(&path).unwrap();
        assert!(!path.exists());
    }
}

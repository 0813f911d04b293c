//! Pod network namespaces at `{run_dir}/netns/{pod-uid}`, made without
//! forking: a short-lived OS thread `unshare(CLONE_NEWNET)`s, brings `lo` up
//! and bind-mounts `/proc/thread-self/ns/net` onto an empty file. The thread
//! then ends; the bind mount keeps the namespace alive until it is unmounted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Path of a pod's netns.
pub fn netns_path(run_dir: &Path, pod_uid: &str) -> PathBuf {
    run_dir.join("netns").join(pod_uid)
}

/// Whether `path` is a mounted network namespace.
pub fn is_netns(path: &Path) -> bool {
    match (fs::metadata(path), path.parent().map(fs::metadata)) {
        // A bind-mounted nsfs file lives on another device than its directory.
        (Ok(m), Some(Ok(p))) => {
            use std::os::unix::fs::MetadataExt;
            m.dev() != p.dev()
        }
        _ => false,
    }
}

/// Creates the netns at `path` (idempotent) with `lo` up.
pub fn create(path: &Path) -> io::Result<()> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let target = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            super::sys::loopback_up()?;
            mount(
                Some(Path::new("/proc/thread-self/ns/net")),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })?;
    let result = handle
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?;
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Unmounts and removes the netns at `path` (idempotent).
pub fn remove(path: &Path) -> io::Result<()> {
    if is_netns(path) {
        umount2(path, MntFlags::MNT_DETACH)?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a fresh OS thread that has entered the netns at `path`
/// (for probes). Never call `setns` on a tokio worker.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = fs::File::open(path)?;
    std::thread::Builder::new()
        .name("netns-probe".into())
        .spawn(move || -> io::Result<T> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        })?
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
}

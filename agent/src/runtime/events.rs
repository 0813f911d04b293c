//! Wakes a pod's worker as soon as one of its shims writes `status.json`
//! (the container started, or ended) instead of at the worker's next tick:
//! one inotify instance per runtime, a watch on each container directory,
//! read by one thread.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// The file whose changes are reported.
const STATUS_FILE: &str = "status.json";

/// Changes of the containers' status files, by pod.
pub(super) struct StatusEvents {
    inotify: Inotify,
    /// The pod each watched directory belongs to.
    pods: Mutex<HashMap<WatchDescriptor, String>>,
}

impl StatusEvents {
    /// A new, empty set of watches.
    pub(super) fn new() -> nix::Result<StatusEvents> {
        Ok(StatusEvents {
            inotify: Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?,
            pods: Mutex::new(HashMap::new()),
        })
    }

    /// Report changes of `dir/status.json` as changes of pod `pod_uid`. A
    /// failure only costs latency (the worker still ticks): it is logged.
    pub(super) fn watch(&self, dir: &Path, pod_uid: &str) {
        match self.inotify.add_watch(
            dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        ) {
            Ok(wd) => {
                self.pods
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(wd, pod_uid.to_string());
            }
            Err(e) => {
                tracing::debug!(error = %e, dir = %dir.display(), "cannot watch a container's status file")
            }
        }
    }

    /// Wait at most `timeout` for changes; the pods whose status files
    /// changed (each once).
    pub(super) fn wait(&self, timeout: Duration) -> Vec<String> {
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            return Vec::new();
        }
        let Ok(events) = self.inotify.read_events() else {
            return Vec::new();
        };
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed: Vec<String> = Vec::new();
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The directory is gone (the pod was removed).
                pods.remove(&event.wd);
                continue;
            }
            if event.name.as_deref().and_then(|n| n.to_str()) != Some(STATUS_FILE) {
                continue;
            }
            if let Some(uid) = pods.get(&event.wd) {
                if !changed.contains(uid) {
                    changed.push(uid.clone());
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_written_status_file_names_its_pod() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let events = StatusEvents::new().unwrap();
        events.watch(&a, "pod-a");
        events.watch(&b, "pod-b");
        assert!(events.wait(Duration::from_millis(10)).is_empty());
        // Written atomically, as the shim does: a temporary file renamed.
        std::fs::write(b.join("status.json.tmp"), "{}").unwrap();
        std::fs::rename(b.join("status.json.tmp"), b.join("status.json")).unwrap();
        std::fs::write(a.join("shim.log"), "not the status").unwrap();
        assert_eq!(
            events.wait(Duration::from_secs(5)),
            vec!["pod-b".to_string()]
        );
        std::fs::remove_dir_all(&b).unwrap();
        std::fs::write(a.join("status.json"), "{}").unwrap();
        assert_eq!(
            events.wait(Duration::from_secs(5)),
            vec!["pod-a".to_string()]
        );
        assert_eq!(
            events.pods.lock().unwrap().len(),
            1,
            "the removed dir's watch is dropped"
        );
    }
}

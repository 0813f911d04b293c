//! Image garbage collection as the kubelet does it: when the image file
//! system is above `image-gc-high-threshold` (default 85 %) used, images no
//! container uses are removed, least recently used first, until it is below
//! `image-gc-low-threshold` (80 %) or less; never an image younger than
//! `image-minimum-gc-age` (2 min) or one from the preload directory. Their
//! blobs, unpacked layers and stale partial downloads go with them.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ImageError, ImageRecord, ImageStore};

/// When and how far to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// Start above this percentage of the file system used.
    pub high_threshold_percent: u8,
    /// Stop below this percentage.
    pub low_threshold_percent: u8,
    /// Never remove an image that came into the store less than this ago.
    pub minimum_age: Duration,
}

impl Default for GcPolicy {
    /// The kubelet's defaults: 85 %, 80 %, 2 min.
    fn default() -> Self {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            minimum_age: Duration::from_secs(120),
        }
    }
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Usage before, in percent.
    pub usage_before: u8,
    /// Usage after, in percent.
    pub usage_after: u8,
    /// The images removed (their first name, or ID).
    pub removed: Vec<String>,
    /// Partial downloads removed.
    pub partials_removed: usize,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `(used, capacity)` bytes of the file system holding `path` (statvfs).
pub fn fs_usage(path: &Path) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    let capacity = st.blocks() as u64 * frsize;
    let free = st.blocks_free() as u64 * frsize;
    Ok((capacity.saturating_sub(free), capacity))
}

fn percent(used: u64, capacity: u64) -> u8 {
    if capacity == 0 {
        return 0;
    }
    ((used as u128 * 100) / capacity as u128).min(100) as u8
}

impl ImageStore {
    /// Runs one collection with `usage` measuring the file system (the real
    /// one is [`fs_usage`] of the store's root).
    pub fn collect_garbage(
        &self,
        policy: &GcPolicy,
        usage: impl Fn() -> std::io::Result<(u64, u64)>,
    ) -> Result<GcReport, ImageError> {
        let io = |e: std::io::Error| ImageError::Io {
            path: self.root().display().to_string(),
            source: e,
        };
        let (used, capacity) = usage().map_err(io)?;
        let mut report = GcReport {
            usage_before: percent(used, capacity),
            usage_after: percent(used, capacity),
            ..Default::default()
        };
        if report.usage_before < policy.high_threshold_percent {
            return Ok(report);
        }
        let _lock = self.lock()?;
        let now = now_secs();
        let min_age = policy.minimum_age.as_secs();
        // Stale partial downloads (no write for the minimum age) go first.
        let ingest = self.root().join("ingest");
        if let Ok(rd) = fs::read_dir(&ingest) {
            for e in rd.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() >= min_age);
                if stale && fs::remove_file(e.path()).is_ok() {
                    report.partials_removed += 1;
                }
            }
        }
        let mut index = self.read_index()?;
        let mut candidates: Vec<ImageRecord> = Vec::new();
        for img in &index.images {
            if img.preloaded
                || self.leased(&img.id)?
                || now.saturating_sub(img.created_at.unwrap_or(0)) < min_age
            {
                continue;
            }
            candidates.push(img.clone());
        }
        candidates.sort_by_key(|i| i.last_used.or(i.created_at).unwrap_or(0));
        for img in candidates {
            let (used, capacity) = usage().map_err(io)?;
            report.usage_after = percent(used, capacity);
            if report.usage_after <= policy.low_threshold_percent {
                break;
            }
            index.images.retain(|i| i.id != img.id);
            self.write_index(&index)?;
            self.gc(&index, true)?;
            tracing::info!(image = %img.names.first().unwrap_or(&img.id), size = img.size, "image garbage collected");
            report
                .removed
                .push(img.names.first().cloned().unwrap_or(img.id.clone()));
        }
        let (used, capacity) = usage().map_err(io)?;
        report.usage_after = percent(used, capacity);
        Ok(report)
    }
}

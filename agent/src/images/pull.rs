//! Pulling an image into the store: resolve the reference through the
//! node's mirrors and the registry, pick the node's platform from an index
//! or manifest list as containerd does, fetch the config and the layers
//! (at most [`MAX_CONCURRENT_BLOBS`] blob downloads at once on the node, one
//! download per digest however many pulls want it), each layer streamed to
//! a partial file under `ingest/` that survives cuts, restarts and reboots
//! and is resumed with `Range`, then verified, unpacked and recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::auth::{Credentials, Keyring};
use super::distribution::{
    BlobDownload, ClientOptions, FetchedManifest, Progress, RegistryClient, RegistryError,
    MAX_CONFIG_BYTES,
};
use super::platform::{self, Platform};
use super::registries::Endpoint;
use super::{ImageError, ImageRecord, ImageRef, ImageStore, PulledImage};

/// Blob downloads the node runs at once (containerd's default).
pub const MAX_CONCURRENT_BLOBS: usize = 3;
/// Attempts in a row that bring no new byte before a blob download fails.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 5;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The reference cannot be parsed.
    #[error("couldn't parse image name {0:?}: invalid reference format")]
    InvalidReference(String),
    /// The tag or digest could not be resolved to a manifest.
    #[error("failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: {source}")]
    Resolve {
        /// The normalised reference.
        image: String,
        /// What the registry (or the link) said.
        #[source]
        source: Box<RegistryError>,
    },
    /// The index offers no image for the node's platform.
    #[error("failed to pull and unpack image {image:?}: no image for platform {want} in the index (it offers {offered})")]
    NoMatchingPlatform {
        /// The reference.
        image: String,
        /// The node's platform.
        want: String,
        /// The platforms in the index.
        offered: String,
    },
    /// A manifest of a kind bramble does not run.
    #[error("failed to pull and unpack image {image:?}: unsupported manifest media type {media_type:?} (want an OCI or Docker schema 2 manifest or index)")]
    UnsupportedMediaType {
        /// The reference.
        image: String,
        /// The media type served.
        media_type: String,
    },
    /// A manifest, config or layer could not be fetched.
    #[error("failed to pull and unpack image {image:?}: {source}")]
    Fetch {
        /// The reference.
        image: String,
        /// The error.
        #[source]
        source: Box<RegistryError>,
    },
    /// The store refused the image (bad layer, full disk, ...).
    #[error("failed to pull and unpack image {image:?}: {source}")]
    Store {
        /// The reference.
        image: String,
        /// The error.
        #[source]
        source: Box<ImageError>,
    },
}

impl PullError {
    /// Whether no registry endpoint could be reached at all.
    pub fn is_unreachable(&self) -> bool {
        match self {
            PullError::Resolve { source, .. } => source.is_unreachable(),
            _ => false,
        }
    }
}

/// What a successful pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The image as stored.
    pub image: ImageRecord,
    /// Compressed size of the image's blobs (config and layers).
    pub size: u64,
    /// Bytes received from registries in this pull.
    pub received: u64,
    /// Bytes that were already on disk from an earlier, cut attempt.
    pub resumed: u64,
    /// How long the pull took.
    pub duration: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Debug, Deserialize)]
struct PlatformJson {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ManifestJson {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// One blob download that others may wait for.
#[derive(Default)]
struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

/// A counting semaphore for blob downloads.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.cv.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The node's puller (share it behind an `Arc`; all methods block).
pub struct Puller {
    store: ImageStore,
    client: RegistryClient,
    platform: Platform,
    slots: Slots,
    inflight: Mutex<HashMap<String, Arc<Flight>>>,
    retry_base: Duration,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("platform", &self.platform.to_string())
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// A puller into `store` for `platform` (normally [`Platform::host`]).
    pub fn new(store: ImageStore, options: ClientOptions, platform: Platform) -> Puller {
        Puller {
            store,
            client: RegistryClient::new(options),
            platform,
            slots: Slots {
                free: Mutex::new(MAX_CONCURRENT_BLOBS),
                cv: Condvar::new(),
            },
            inflight: Mutex::new(HashMap::new()),
            retry_base: Duration::from_millis(500),
        }
    }

    /// The platform images are pulled for.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The store images go into.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    fn credentials(
        &self,
        ep: &Endpoint,
        keyring: &Keyring,
        registry: &str,
        path: &str,
    ) -> Option<Credentials> {
        if let Some(a) = self
            .client
            .options()
            .registries
            .host_config(&ep.host)
            .and_then(|c| c.auth.as_ref())
        {
            if let Some(c) = Credentials::from_parts(
                a.username.as_deref(),
                a.password.as_deref(),
                a.auth.as_deref(),
                a.identity_token.as_deref(),
            ) {
                return Some(c);
            }
        }
        keyring
            .lookup(&ep.host, &ep.repository)
            .or_else(|| {
                (!ep.mirror)
                    .then(|| keyring.lookup(registry, path))
                    .flatten()
            })
            .cloned()
    }

    /// Pulls `reference` (as a pod names it) with the pull secrets in
    /// `keyring`. `cancel` stops it between reads (partial files stay).
    pub fn pull(
        &self,
        reference: &str,
        keyring: &Keyring,
        cancel: &AtomicBool,
    ) -> Result<PullOutcome, PullError> {
        let started = Instant::now();
        let parsed = ImageRef::parse(reference)
            .ok_or_else(|| PullError::InvalidReference(reference.to_string()))?;
        let image = parsed.to_string();
        let (registry, path) = parsed
            .repository
            .split_once('/')
            .ok_or_else(|| PullError::InvalidReference(reference.to_string()))?;
        let tag_or_digest = parsed
            .digest
            .clone()
            .or_else(|| parsed.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let endpoints = self.client.options().registries.endpoints(registry, path);
        let mut last_err = None;
        let mut resolved = None;
        for ep in &endpoints {
            let creds = self.credentials(ep, keyring, registry, path);
            match self
                .client
                .fetch_manifest(ep, creds.as_ref(), &tag_or_digest, None)
            {
                Ok(m) => {
                    resolved = Some((ep.clone(), creds, m));
                    break;
                }
                Err(e) => {
                    tracing::info!(endpoint = %ep.base, image = %image, error = %e, "endpoint could not resolve the image");
                    let give_up = !ep.mirror && !e.is_unreachable();
                    last_err = Some(e);
                    if give_up {
                        break;
                    }
                }
            }
        }
        let Some((ep, creds, top)) = resolved else {
            return Err(PullError::Resolve {
                image,
                source: Box::new(
                    last_err.unwrap_or_else(|| RegistryError::Protocol("no endpoint".into())),
                ),
            });
        };
        let creds = creds.as_ref();
        let fetch_err = |source| PullError::Fetch {
            image: image.clone(),
            source: Box::new(source),
        };
        let repo_digest = top.digest.clone();
        let manifest = if INDEX_TYPES.contains(&top.media_type.as_str()) {
            let child = self.pick_from_index(&image, &top)?;
            if !child.media_type.is_empty() && !MANIFEST_TYPES.contains(&child.media_type.as_str())
            {
                // A nested index or an artifact: not an image to run.
                return Err(PullError::UnsupportedMediaType {
                    image,
                    media_type: child.media_type,
                });
            }
            let m = self
                .client
                .fetch_manifest(&ep, creds, &child.digest, Some(child.size))
                .map_err(fetch_err)?;
            if !MANIFEST_TYPES.contains(&m.media_type.as_str()) {
                return Err(PullError::UnsupportedMediaType {
                    image,
                    media_type: m.media_type,
                });
            }
            m
        } else if MANIFEST_TYPES.contains(&top.media_type.as_str()) {
            top
        } else {
            return Err(PullError::UnsupportedMediaType {
                image,
                media_type: top.media_type,
            });
        };
        let doc: ManifestJson = serde_json::from_slice(&manifest.bytes).map_err(|e| {
            fetch_err(RegistryError::Protocol(format!(
                "malformed manifest {}: {e}",
                manifest.digest
            )))
        })?;
        let config = self
            .client
            .fetch_small_blob(
                &ep,
                creds,
                &doc.config.digest,
                doc.config.size,
                MAX_CONFIG_BYTES,
            )
            .map_err(fetch_err)?;
        let cp: ConfigPlatform = serde_json::from_slice(&config).map_err(|e| {
            fetch_err(RegistryError::Protocol(format!(
                "malformed image config {}: {e}",
                doc.config.digest
            )))
        })?;
        let image_platform = Platform::new(
            &cp.os,
            &cp.architecture,
            cp.variant.as_deref().unwrap_or(""),
        );
        if platform::select(&self.platform, std::slice::from_ref(&image_platform)).is_none() {
            return Err(PullError::NoMatchingPlatform {
                image,
                want: self.platform.to_string(),
                offered: image_platform.to_string(),
            });
        }
        let progress = Progress::default();
        self.fetch_layers(&ep, creds, &doc.layers, cancel, &progress)
            .map_err(fetch_err)?;
        let size = doc.config.size + doc.layers.iter().map(|l| l.size).sum::<u64>();
        let record = self
            .store
            .commit_pulled(&PulledImage {
                name: parsed.tagged_name(),
                repository: parsed.repository.clone(),
                repo_digest,
                manifest: manifest.bytes.clone(),
                config,
                layers: doc
                    .layers
                    .iter()
                    .map(|l| (l.digest.clone(), l.size))
                    .collect(),
                platform: image_platform,
            })
            .map_err(|source| PullError::Store {
                image: image.clone(),
                source: Box::new(source),
            })?;
        let duration = started.elapsed();
        let received = progress.received.load(Ordering::Relaxed);
        let resumed = progress.resumed.load(Ordering::Relaxed);
        tracing::info!(
            image = %image,
            size,
            received,
            resumed,
            seconds = duration.as_secs_f64(),
            bytes_per_second = (received as f64 / duration.as_secs_f64().max(0.001)) as u64,
            "pulled image"
        );
        Ok(PullOutcome {
            image: record,
            size,
            received,
            resumed,
            duration,
        })
    }

    fn pick_from_index(
        &self,
        image: &str,
        index: &FetchedManifest,
    ) -> Result<Descriptor, PullError> {
        let doc: IndexJson =
            serde_json::from_slice(&index.bytes).map_err(|e| PullError::Fetch {
                image: image.to_string(),
                source: Box::new(RegistryError::Protocol(format!(
                    "malformed index {}: {e}",
                    index.digest
                ))),
            })?;
        let manifests: Vec<Descriptor> = doc
            .manifests
            .into_iter()
            .filter(|d| d.platform.is_some())
            .collect();
        let offered: Vec<Platform> = manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref().unwrap_or("")))
            .collect();
        match platform::select(&self.platform, &offered) {
            Some(i) => Ok(manifests
                .into_iter()
                .nth(i)
                .ok_or_else(|| PullError::InvalidReference(image.to_string()))?),
            None => Err(PullError::NoMatchingPlatform {
                image: image.to_string(),
                want: self.platform.to_string(),
                offered: if offered.is_empty() {
                    "none".into()
                } else {
                    offered
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
        }
    }

    fn fetch_layers(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        layers: &[Descriptor],
        cancel: &AtomicBool,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        let total: u64 = layers.iter().map(|l| l.size).sum();
        let finished = AtomicBool::new(false);
        let results: Vec<Result<(), RegistryError>> = std::thread::scope(|s| {
            // Progress and rate in the log every 10 s while layers download.
            s.spawn(|| {
                let started = Instant::now();
                let mut next = started + Duration::from_secs(10);
                while !finished.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if Instant::now() >= next {
                        next += Duration::from_secs(10);
                        let got = progress.received.load(Ordering::Relaxed)
                            + progress.resumed.load(Ordering::Relaxed);
                        let rate = progress.received.load(Ordering::Relaxed) as f64
                            / started.elapsed().as_secs_f64().max(0.001);
                        tracing::info!(
                            endpoint = %ep.base,
                            repository = %ep.repository,
                            bytes = got,
                            of = total,
                            bytes_per_second = rate as u64,
                            "pulling"
                        );
                    }
                }
            });
            let handles: Vec<_> = layers
                .iter()
                .map(|l| {
                    s.spawn(move || {
                        self.ensure_blob(ep, creds, &l.digest, l.size, cancel, progress)
                    })
                })
                .collect();
            let results = handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RegistryError::Protocol("a layer download panicked".into()))
                    })
                })
                .collect();
            finished.store(true, Ordering::Relaxed);
            results
        });
        results.into_iter().collect()
    }

    /// Makes sure blob `digest` is in the store, downloading it once
    /// however many pulls ask at the same time.
    fn ensure_blob(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        digest: &str,
        size: u64,
        cancel: &AtomicBool,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        if !valid_digest(digest) {
            return Err(RegistryError::Protocol(format!(
                "invalid layer digest {digest:?}"
            )));
        }
        loop {
            if self.store.has_blob(digest, size) {
                return Ok(());
            }
            let (flight, leader) = {
                let mut inflight = lock(&self.inflight);
                match inflight.get(digest) {
                    Some(f) => (f.clone(), false),
                    None => {
                        let f = Arc::new(Flight::default());
                        inflight.insert(digest.to_string(), f.clone());
                        (f, true)
                    }
                }
            };
            if !leader {
                let mut done = lock(&flight.done);
                while !*done {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(RegistryError::Cancelled);
                    }
                    done = flight
                        .cv
                        .wait_timeout(done, Duration::from_millis(200))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                // The leader finished (or failed): look again.
                if self.store.has_blob(digest, size) {
                    return Ok(());
                }
                continue;
            }
            let result = self.download(ep, creds, digest, size, cancel, progress);
            lock(&self.inflight).remove(digest);
            *lock(&flight.done) = true;
            flight.cv.notify_all();
            return result;
        }
    }

    fn acquire(&self, cancel: &AtomicBool) -> Result<SlotGuard<'_>, RegistryError> {
        let mut free = lock(&self.slots.free);
        while *free == 0 {
            if cancel.load(Ordering::Relaxed) {
                return Err(RegistryError::Cancelled);
            }
            free = self
                .slots
                .cv
                .wait_timeout(free, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *free -= 1;
        Ok(SlotGuard(&self.slots))
    }

    fn download(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        digest: &str,
        size: u64,
        cancel: &AtomicBool,
        progress: &Progress,
    ) -> Result<(), RegistryError> {
        let _slot = self.acquire(cancel)?;
        let partial = self.store.ingest_path(digest);
        let mut idle_attempts = 0;
        let mut delay = self.retry_base;
        loop {
            let before = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let blob = BlobDownload {
                digest,
                size,
                partial: &partial,
            };
            let outcome = self
                .client
                .fetch_blob_attempt(ep, creds, &blob, cancel, progress);
            match outcome {
                Ok(true) => {
                    return self.store.commit_blob(&partial, digest).map_err(|e| {
                        RegistryError::Io {
                            path: partial.display().to_string(),
                            source: std::io::Error::other(e.to_string()),
                        }
                    })
                }
                Ok(false) => {}
                Err(e) if e.is_unreachable() => {
                    tracing::info!(%digest, error = %e, "blob download failed; retrying");
                }
                Err(e) => return Err(e),
            }
            let after = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            if after > before {
                idle_attempts = 0;
                delay = self.retry_base;
            } else {
                idle_attempts += 1;
                if idle_attempts >= MAX_ATTEMPTS_WITHOUT_PROGRESS {
                    return Err(RegistryError::Protocol(format!(
                        "download of blob {digest} made no progress in {idle_attempts} attempts ({after} of {size} bytes kept for the next pull)"
                    )));
                }
            }
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if cancel.load(Ordering::Relaxed) {
                    return Err(RegistryError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .map(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or(false)
}

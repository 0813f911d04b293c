//! The local OCI image store under `{state_dir}/images`.
//!
//! Layout on disk:
//! - `blobs/sha256/{hex}`: content-addressed blobs (manifests, configs, layers);
//! - `layers/{diff-id-hex}/`: each layer unpacked once, in overlayfs form;
//! - `images.json`: the imported images (names, digests, platform, config);
//! - `leases/{key}`: images in use by containers (`rm` refuses those);
//! - `tmp/`: scratch space for imports;
//! - `ingest/{hex}.partial`: blobs being pulled, kept across cuts, agent
//!   restarts and reboots so the next attempt resumes where this one stopped.
//!
//! Imports accept an OCI image layout (a directory or a tar of one, as
//! written by `skopeo`, `umoci`, `buildah`, `docker save` from Docker 25 on)
//! and the classic `docker save` archive (`manifest.json`). An image for
//! another platform than the node's is refused with a message naming both.
//!
//! All functions block; call them from a blocking thread. Concurrent use from
//! several processes (the agent and `bramble-agent image import`) is
//! serialised by an exclusive lock on `images.lock`.

pub mod auth;
pub mod build;
pub mod busybox;
pub mod distribution;
pub mod gc;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod unpack;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use reference::ImageRef;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file system error on the store.
    #[error("image store {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A layer could not be unpacked.
    #[error("cannot unpack layer {blob}: {source}")]
    Layer {
        /// The blob path.
        blob: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A tar entry tried to leave the layer directory.
    #[error("layer entry {path} points outside the layer; the image is refused")]
    UnsafePath {
        /// The entry path.
        path: String,
    },
    /// The archive is neither an OCI layout nor a `docker save` archive.
    #[error("{path} is not an OCI image layout or docker save archive: {reason}")]
    UnknownFormat {
        /// The path imported.
        path: String,
        /// What was missing.
        reason: String,
    },
    /// A JSON document of the image is malformed.
    #[error("malformed {what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A blob's content does not match its digest.
    #[error("blob {expected} has digest {actual}: the archive is corrupt")]
    DigestMismatch {
        /// The digest the manifest names.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// The image is built for another platform.
    #[error("image {image} is for {image_platform}, but this node is {node_platform}; import an image built for {node_platform}")]
    WrongPlatform {
        /// The image.
        image: String,
        /// The image's `os/arch[/variant]`.
        image_platform: String,
        /// The node's `os/arch`.
        node_platform: String,
    },
    /// No image matches the reference.
    #[error("image {0} is not in the local store; import it with `bramble-agent image import`")]
    NotFound(String),
    /// The reference cannot be parsed.
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),
    /// The image is used by containers.
    #[error("image {0} is in use by a container; delete its pods first")]
    InUse(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The parts of an image's config the runtime uses (OCI image config,
/// `config` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    /// The image's user (`uid[:gid]` or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `KEY=value` environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// An image's config document (OCI image config / Docker image JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfigDoc {
    /// GOARCH-style architecture (`amd64`, `arm64`, `arm`).
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v6`, `v7`, `v8` for arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Execution defaults.
    #[serde(default)]
    pub config: Option<ExecConfig>,
    /// Layer diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
}

/// The `rootfs` of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// Uncompressed digests of the layers, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image ID: the digest of its config blob.
    pub id: String,
    /// Digest of the manifest (for `name@sha256:` references).
    pub manifest_digest: String,
    /// Normalised names (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Layer diff IDs, bottom first.
    pub layers: Vec<String>,
    /// Total size of the layer blobs.
    pub size: u64,
    /// Execution defaults from the image config.
    pub config: ExecConfig,
    /// `repository@sha256:...` digests the image was pulled by (what
    /// `status.containerStatuses[].imageID` shows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// When the image came into the store (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When a container last started from it (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
    /// Imported from the preload directory: never garbage collected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preloaded: bool,
}

impl ImageRecord {
    /// The repository digest pinned form of one of its names, if any.
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreIndex {
    images: Vec<ImageRecord>,
}

/// The node's platform as `os/arch`, with OCI (GOARCH) names.
pub fn node_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "riscv64" => "riscv64",
        other => other,
    };
    format!("linux/{arch}")
}

fn platform_matches(os: &str, arch: &str) -> bool {
    let node = node_platform();
    let (node_os, node_arch) = node.split_once('/').unwrap_or(("linux", ""));
    (os.is_empty() || os == node_os) && arch == node_arch
}

// ---- on-disk JSON shapes of OCI layouts and docker save archives ----

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformDoc>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct PlatformDoc {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc {
    #[serde(default)]
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Media types written for manifests the store synthesises.
pub mod media_types {
    /// OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// gzip-compressed layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// zstd-compressed layer.
    pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
}

/// A pulled image, its blobs fetched, for [`ImageStore::commit_pulled`].
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The tagged name (`docker.io/library/nginx:1.25`), if pulled by tag.
    pub name: Option<String>,
    /// `docker.io/library/nginx`.
    pub repository: String,
    /// Digest of what the reference resolved to (the index or manifest).
    pub repo_digest: String,
    /// The platform manifest's bytes.
    pub manifest: Vec<u8>,
    /// The config's bytes.
    pub config: Vec<u8>,
    /// Layer blobs (digest, size), bottom first, already in the store.
    pub layers: Vec<(String, u64)>,
    /// The image's platform.
    pub platform: platform::Platform,
}

/// The image store. Cheap to clone (it is a path).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

struct StoreLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `{state_dir}/images`.
    pub fn open(state_dir: &Path) -> Result<ImageStore, ImageError> {
        let root = state_dir.join("images");
        for d in ["blobs/sha256", "layers", "leases", "tmp", "ingest"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(ImageStore { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<StoreLock, ImageError> {
        let p = self.root.join("images.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(&p)(e.into()))?;
        let _ = lock.as_fd();
        Ok(StoreLock { _lock: lock })
    }

    fn read_index(&self) -> Result<StoreIndex, ImageError> {
        let p = self.root.join("images.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| ImageError::Json {
                what: p.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StoreIndex::default()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    fn write_index(&self, index: &StoreIndex) -> Result<(), ImageError> {
        let p = self.root.join("images.json");
        let data = serde_json::to_vec_pretty(index).map_err(|source| ImageError::Json {
            what: "store index".into(),
            source,
        })?;
        write_atomic(&p, &data).map_err(io_err(&p))
    }

    /// Path of a blob by digest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    /// Directory of an unpacked layer by diff ID.
    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.root.join("layers").join(hex)
    }

    /// Lists the images, sorted by first name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut images = self.read_index()?.images;
        images.sort_by(|a, b| a.names.first().cmp(&b.names.first()));
        Ok(images)
    }

    /// Finds the image a pod's `image:` field refers to.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let index = self.read_index()?;
        find(&index, reference)
            .cloned()
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))
    }

    /// Imports an OCI layout directory, an OCI archive or a `docker save`
    /// archive (optionally gzip-compressed). Returns the imported images.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.lock()?;
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let scratch = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(io_err(path))?;
        let dir = if meta.is_dir() {
            path.to_path_buf()
        } else {
            extract_archive(path, scratch.path())?;
            scratch.path().to_path_buf()
        };
        let imported = if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
            self.import_oci_layout(&dir, path)?
        } else if dir.join("manifest.json").is_file() {
            self.import_docker_archive(&dir, path)?
        } else {
            return Err(ImageError::UnknownFormat {
                path: path.display().to_string(),
                reason: "no oci-layout + index.json and no manifest.json".into(),
            });
        };
        self.add_records(&imported)?;
        Ok(imported)
    }

    /// Adds images to the index; a name moves to the image added last.
    fn add_records(&self, records: &[ImageRecord]) -> Result<(), ImageError> {
        let mut index = self.read_index()?;
        for rec in records {
            for other in index.images.iter_mut() {
                other.names.retain(|n| !rec.names.contains(n));
            }
            match index.images.iter_mut().find(|i| i.id == rec.id) {
                Some(existing) => {
                    for n in &rec.names {
                        if !existing.names.contains(n) {
                            existing.names.push(n.clone());
                        }
                    }
                    for d in &rec.repo_digests {
                        if !existing.repo_digests.contains(d) {
                            existing.repo_digests.push(d.clone());
                        }
                    }
                    existing.manifest_digest = rec.manifest_digest.clone();
                }
                None => {
                    let mut rec = rec.clone();
                    rec.created_at.get_or_insert_with(gc::now_secs);
                    index.images.push(rec);
                }
            }
        }
        self.write_index(&index)
    }

    /// Path of the partial download of blob `digest`.
    pub fn ingest_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.partial", hex_of(digest)))
    }

    /// Whether blob `digest` is in the store with `size` bytes.
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        fs::metadata(self.blob_path(digest))
            .map(|m| m.is_file() && m.len() == size)
            .unwrap_or(false)
    }

    /// Moves a complete, verified download into the blobs.
    pub fn commit_blob(&self, partial: &Path, digest: &str) -> Result<(), ImageError> {
        let dest = self.blob_path(digest);
        fs::rename(partial, &dest).map_err(io_err(&dest))
    }

    /// Records a pulled image whose layer blobs are in the store: stores
    /// its manifest and config, unpacks the layers (checking each diff ID)
    /// and names it. A layer that cannot be unpacked is removed with its
    /// partial unpack, so the next pull starts clean.
    pub fn commit_pulled(&self, pulled: &PulledImage) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        let config: ImageConfigDoc =
            serde_json::from_slice(&pulled.config).map_err(|source| ImageError::Json {
                what: "image config".into(),
                source,
            })?;
        if config.rootfs.diff_ids.len() != pulled.layers.len() {
            return Err(ImageError::UnknownFormat {
                path: pulled.repository.clone(),
                reason: format!(
                    "config lists {} layers, manifest {}",
                    config.rootfs.diff_ids.len(),
                    pulled.layers.len()
                ),
            });
        }
        for (i, (digest, size)) in pulled.layers.iter().enumerate() {
            if !self.has_blob(digest, *size) {
                return Err(ImageError::NotFound(digest.clone()));
            }
            let blob = self.blob_path(digest);
            if let Err(e) = self.unpack_once(&blob, &config.rootfs.diff_ids[i]) {
                let _ = fs::remove_file(&blob);
                return Err(e);
            }
        }
        let id = self.put_blob(&pulled.config)?;
        let manifest_digest = self.put_blob(&pulled.manifest)?;
        let rec = ImageRecord {
            id,
            manifest_digest,
            names: pulled.name.iter().cloned().collect(),
            platform: pulled.platform.to_string(),
            layers: config.rootfs.diff_ids.clone(),
            size: pulled.layers.iter().map(|(_, s)| s).sum(),
            config: config.config.unwrap_or_default(),
            repo_digests: vec![format!("{}@{}", pulled.repository, pulled.repo_digest)],
            created_at: None,
            last_used: None,
            preloaded: false,
        };
        self.add_records(std::slice::from_ref(&rec))?;
        let index = self.read_index()?;
        Ok(index
            .images
            .into_iter()
            .find(|i| i.id == rec.id)
            .unwrap_or(rec))
    }

    fn import_oci_layout(&self, dir: &Path, origin: &Path) -> Result<Vec<ImageRecord>, ImageError> {
        let index: IndexDoc = read_json(&dir.join("index.json"))?;
        let mut out = Vec::new();
        let mut refused = None;
        for desc in &index.manifests {
            let mut names = Vec::new();
            if let Some(ann) = &desc.annotations {
                for key in [
                    "io.containerd.image.name",
                    "org.opencontainers.image.ref.name",
                ] {
                    if let Some(v) = ann.get(key).filter(|_| names.is_empty()) {
                        // `ref.name` may be a bare tag ("latest").
                        let candidate =
                            if key.starts_with("org.") && !v.contains('/') && !v.contains(':') {
                                format!("localhost/{}:{v}", file_stem(origin))
                            } else {
                                v.clone()
                            };
                        if let Some(n) = ImageRef::parse(&candidate).and_then(|r| r.tagged_name()) {
                            if !names.contains(&n) {
                                names.push(n);
                            }
                        }
                    }
                }
            }
            let manifest_desc = match self.pick_platform(dir, desc)? {
                Ok(d) => d,
                Err(e) => {
                    refused = Some(e);
                    continue;
                }
            };
            match self.import_manifest(dir, &manifest_desc, names) {
                Ok(rec) => out.push(rec),
                Err(e @ ImageError::WrongPlatform { .. }) => refused = Some(e),
                Err(e) => return Err(e),
            }
        }
        match (out.is_empty(), refused) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(ImageError::UnknownFormat {
                path: origin.display().to_string(),
                reason: "index.json lists no image".into(),
            }),
            _ => Ok(out),
        }
    }

    /// For an index descriptor, the manifest for this node's platform.
    fn pick_platform(
        &self,
        dir: &Path,
        desc: &Descriptor,
    ) -> Result<Result<Descriptor, ImageError>, ImageError> {
        let is_index =
            desc.media_type == media_types::INDEX || desc.media_type == media_types::DOCKER_LIST;
        if !is_index {
            return Ok(Ok(desc.clone()));
        }
        let child: IndexDoc = read_json(&layout_blob(dir, &desc.digest))?;
        let mut seen = Vec::new();
        for m in &child.manifests {
            if let Some(p) = &m.platform {
                if platform_matches(&p.os, &p.architecture) {
                    return Ok(Ok(m.clone()));
                }
                seen.push(format!("{}/{}", p.os, p.architecture));
            }
        }
        Ok(Err(ImageError::WrongPlatform {
            image: desc.digest.clone(),
            image_platform: seen.join(", "),
            node_platform: node_platform(),
        }))
    }

    fn import_manifest(
        &self,
        dir: &Path,
        desc: &Descriptor,
        names: Vec<String>,
    ) -> Result<ImageRecord, ImageError> {
        let manifest_bytes = read_verified(&layout_blob(dir, &desc.digest), &desc.digest)?;
        let manifest: ManifestDoc =
            serde_json::from_slice(&manifest_bytes).map_err(|source| ImageError::Json {
                what: format!("manifest {}", desc.digest),
                source,
            })?;
        let config_bytes = read_verified(
            &layout_blob(dir, &manifest.config.digest),
            &manifest.config.digest,
        )?;
        let layer_files: Vec<PathBuf> = manifest
            .layers
            .iter()
            .map(|l| layout_blob(dir, &l.digest))
            .collect();
        let layer_digests: Vec<String> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        self.finish_import(
            names,
            &manifest_bytes,
            &config_bytes,
            &layer_files,
            Some(&layer_digests),
        )
    }

    fn import_docker_archive(
        &self,
        dir: &Path,
        origin: &Path,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let entries: Vec<DockerManifestEntry> = read_json(&dir.join("manifest.json"))?;
        if entries.is_empty() {
            return Err(ImageError::UnknownFormat {
                path: origin.display().to_string(),
                reason: "manifest.json lists no image".into(),
            });
        }
        let mut out = Vec::new();
        for e in entries {
            let config_path = safe_join(dir, &e.config)?;
            let config_bytes = fs::read(&config_path).map_err(io_err(&config_path))?;
            let layer_files = e
                .layers
                .iter()
                .map(|l| safe_join(dir, l))
                .collect::<Result<Vec<_>, _>>()?;
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| ImageRef::parse(t).and_then(|r| r.tagged_name()))
                .collect();
            // Synthesise an OCI manifest so the image has a manifest digest.
            out.push(self.finish_import(names, &[], &config_bytes, &layer_files, None)?);
        }
        Ok(out)
    }

    /// Stores the blobs, checks the platform, unpacks the layers.
    fn finish_import(
        &self,
        names: Vec<String>,
        manifest_bytes: &[u8],
        config_bytes: &[u8],
        layer_files: &[PathBuf],
        layer_digests: Option<&[String]>,
    ) -> Result<ImageRecord, ImageError> {
        let config: ImageConfigDoc =
            serde_json::from_slice(config_bytes).map_err(|source| ImageError::Json {
                what: "image config".into(),
                source,
            })?;
        let image_platform = match &config.variant {
            Some(v) => format!("{}/{}/{v}", config.os, config.architecture),
            None => format!("{}/{}", config.os, config.architecture),
        };
        if !platform_matches(&config.os, &config.architecture) {
            return Err(ImageError::WrongPlatform {
                image: names.first().cloned().unwrap_or_else(|| "(unnamed)".into()),
                image_platform,
                node_platform: node_platform(),
            });
        }
        if config.rootfs.diff_ids.len() != layer_files.len() {
            return Err(ImageError::UnknownFormat {
                path: "image".into(),
                reason: format!(
                    "config lists {} layers, manifest {}",
                    config.rootfs.diff_ids.len(),
                    layer_files.len()
                ),
            });
        }
        let config_digest = self.put_blob(config_bytes)?;
        let mut size = 0;
        let mut layer_descs = Vec::new();
        for (i, file) in layer_files.iter().enumerate() {
            let digest = self.put_blob_file(file)?;
            if let Some(expected) = layer_digests.and_then(|d| d.get(i)) {
                if *expected != digest {
                    return Err(ImageError::DigestMismatch {
                        expected: expected.clone(),
                        actual: digest,
                    });
                }
            }
            let blob = self.blob_path(&digest);
            let len = fs::metadata(&blob).map_err(io_err(&blob))?.len();
            size += len;
            let media_type = match unpack::detect_compression(&blob).map_err(io_err(&blob))? {
                unpack::Compression::Gzip => media_types::LAYER_GZIP,
                unpack::Compression::Zstd => media_types::LAYER_ZSTD,
                unpack::Compression::None => media_types::LAYER_TAR,
            };
            layer_descs.push(serde_json::json!({
                "mediaType": media_type, "digest": digest, "size": len
            }));
            self.unpack_once(&blob, &config.rootfs.diff_ids[i])?;
        }
        let manifest_bytes = if manifest_bytes.is_empty() {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_types::MANIFEST,
                "config": {"mediaType": media_types::CONFIG, "digest": config_digest, "size": config_bytes.len()},
                "layers": layer_descs,
            }))
            .map_err(|source| ImageError::Json {
                what: "manifest".into(),
                source,
            })?
        } else {
            manifest_bytes.to_vec()
        };
        let manifest_digest = self.put_blob(&manifest_bytes)?;
        Ok(ImageRecord {
            id: config_digest,
            manifest_digest,
            names,
            platform: image_platform,
            layers: config.rootfs.diff_ids.clone(),
            size,
            config: config.config.unwrap_or_default(),
            repo_digests: Vec::new(),
            created_at: None,
            last_used: None,
            preloaded: false,
        })
    }

    fn unpack_once(&self, blob: &Path, diff_id: &str) -> Result<(), ImageError> {
        let dest = self.layer_dir(diff_id);
        if dest.is_dir() {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(format!(
            "layer-{}-{}",
            diff_id.strip_prefix("sha256:").unwrap_or(diff_id),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let result = unpack::unpack_layer(blob, &tmp).and_then(|report| {
            if report.diff_id != diff_id {
                return Err(ImageError::DigestMismatch {
                    expected: diff_id.to_string(),
                    actual: report.diff_id,
                });
            }
            for d in &report.skipped_devices {
                tracing::info!(device = %d, "skipped device node in layer");
            }
            fs::rename(&tmp, &dest).map_err(io_err(&dest))
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn put_blob(&self, data: &[u8]) -> Result<String, ImageError> {
        let digest = format!("sha256:{}", unpack::hex(&Sha256::digest(data)));
        let p = self.blob_path(&digest);
        if !p.exists() {
            write_atomic(&p, data).map_err(io_err(&p))?;
        }
        Ok(digest)
    }

    fn put_blob_file(&self, src: &Path) -> Result<String, ImageError> {
        let mut f = fs::File::open(src).map_err(io_err(src))?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("blob-{}-{}", std::process::id(), uniq()));
        let mut out = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io_err(src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            io::Write::write_all(&mut out, &buf[..n]).map_err(io_err(&tmp))?;
        }
        out.sync_all().map_err(io_err(&tmp))?;
        let digest = format!("sha256:{}", unpack::hex(&hasher.finalize()));
        let dest = self.blob_path(&digest);
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        Ok(digest)
    }

    /// Removes a name, or (given an ID or when its last name goes) the whole
    /// image, then deletes blobs and layers no image uses any more. Refuses
    /// an image that a container holds a lease on.
    pub fn remove(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let rec = find(&index, reference)
            .cloned()
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        let by_name = ImageRef::parse(reference)
            .and_then(|r| r.tagged_name())
            .filter(|n| rec.names.contains(n) && rec.names.len() > 1);
        if let Some(name) = by_name {
            if let Some(i) = index.images.iter_mut().find(|i| i.id == rec.id) {
                i.names.retain(|n| *n != name);
            }
            self.write_index(&index)?;
            return Ok(rec);
        }
        if self.leased(&rec.id)? {
            return Err(ImageError::InUse(reference.to_string()));
        }
        index.images.retain(|i| i.id != rec.id);
        self.write_index(&index)?;
        self.gc(&index, false)?;
        Ok(rec)
    }

    /// Deletes the blobs and layers no image in `index` uses. With
    /// `spare_recent`, blobs written in the last ten minutes stay: they may
    /// belong to a pull that has not recorded its image yet.
    fn gc(&self, index: &StoreIndex, spare_recent: bool) -> Result<(), ImageError> {
        let mut keep_layers = std::collections::BTreeSet::new();
        let mut keep_blobs = std::collections::BTreeSet::new();
        for img in &index.images {
            keep_blobs.insert(hex_of(&img.id).to_string());
            keep_blobs.insert(hex_of(&img.manifest_digest).to_string());
            for l in &img.layers {
                keep_layers.insert(hex_of(l).to_string());
            }
            if let Ok(bytes) = fs::read(self.blob_path(&img.manifest_digest)) {
                if let Ok(m) = serde_json::from_slice::<ManifestDoc>(&bytes) {
                    for l in m.layers {
                        keep_blobs.insert(hex_of(&l.digest).to_string());
                    }
                }
            }
        }
        for (dir, keep) in [("layers", &keep_layers), ("blobs/sha256", &keep_blobs)] {
            let d = self.root.join(dir);
            for e in fs::read_dir(&d).map_err(io_err(&d))?.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let recent = spare_recent
                    && dir == "blobs/sha256"
                    && e.metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age < std::time::Duration::from_secs(600));
                if !keep.contains(&name) && !recent {
                    let p = e.path();
                    let r = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                    r.map_err(io_err(&p))?;
                }
            }
        }
        Ok(())
    }

    /// Records that `holder` (a container key) uses image `id`.
    pub fn add_lease(&self, holder: &str, id: &str) -> Result<(), ImageError> {
        let p = self.root.join("leases").join(holder);
        write_atomic(&p, id.as_bytes()).map_err(io_err(&p))?;
        // Remember the use, for garbage collection's least-recently-used order.
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        if let Some(img) = index.images.iter_mut().find(|i| i.id == id) {
            img.last_used = Some(gc::now_secs());
            self.write_index(&index)?;
        }
        Ok(())
    }

    /// Drops `holder`'s lease.
    pub fn remove_lease(&self, holder: &str) -> Result<(), ImageError> {
        let p = self.root.join("leases").join(holder);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&p)(e)),
            _ => Ok(()),
        }
    }

    fn leased(&self, id: &str) -> Result<bool, ImageError> {
        let d = self.root.join("leases");
        for e in fs::read_dir(&d).map_err(io_err(&d))?.flatten() {
            if fs::read_to_string(e.path())
                .map(|s| s == id)
                .unwrap_or(false)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn mark_preloaded(&self, ids: &[String]) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        for img in index.images.iter_mut().filter(|i| ids.contains(&i.id)) {
            img.preloaded = true;
        }
        self.write_index(&index)
    }

    /// Imports every file and directory in `preload_dir`, logging failures.
    /// Returns the number of images imported.
    pub fn import_preload(&self, preload_dir: &Path) -> usize {
        let Ok(rd) = fs::read_dir(preload_dir) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            match self.import(&e.path()) {
                Ok(imgs) => {
                    n += imgs.len();
                    let ids: Vec<String> = imgs.iter().map(|i| i.id.clone()).collect();
                    if let Err(err) = self.mark_preloaded(&ids) {
                        tracing::warn!(error = %err, "cannot mark preloaded images");
                    }
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "preload import failed")
                }
            }
        }
        n
    }
}

fn find<'a>(index: &'a StoreIndex, reference: &str) -> Option<&'a ImageRecord> {
    let r = reference.trim();
    // A bare or prefixed image ID.
    let hexpart = r.strip_prefix("sha256:").unwrap_or(r);
    if hexpart.len() >= 12 && hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Some(img) = index
            .images
            .iter()
            .find(|i| hex_of(&i.id).starts_with(hexpart))
        {
            return Some(img);
        }
    }
    let parsed = ImageRef::parse(r)?;
    if let Some(d) = &parsed.digest {
        return index.images.iter().find(|i| {
            i.manifest_digest == *d
                || i.id == *d
                || i.repo_digests
                    .iter()
                    .any(|r| *r == format!("{}@{d}", parsed.repository))
        });
    }
    let name = parsed.tagged_name()?;
    index.images.iter().find(|i| i.names.contains(&name))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "image".into())
        .split('.')
        .next()
        .unwrap_or("image")
        .to_ascii_lowercase()
}

fn layout_blob(dir: &Path, digest: &str) -> PathBuf {
    let (algo, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(algo).join(hex)
}

fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ImageError::UnsafePath {
            path: rel.to_string(),
        });
    }
    Ok(dir.join(p))
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, ImageError> {
    let b = fs::read(p).map_err(io_err(p))?;
    serde_json::from_slice(&b).map_err(|source| ImageError::Json {
        what: p.display().to_string(),
        source,
    })
}

fn read_verified(p: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let b = fs::read(p).map_err(io_err(p))?;
    let actual = format!("sha256:{}", unpack::hex(&Sha256::digest(&b)));
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(b)
}

fn extract_archive(archive: &Path, dest: &Path) -> Result<(), ImageError> {
    let compression = unpack::detect_compression(archive).map_err(io_err(archive))?;
    let f = io::BufReader::new(fs::File::open(archive).map_err(io_err(archive))?);
    let reader: Box<dyn Read> = match compression {
        unpack::Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        unpack::Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(f).map_err(|e| {
                io_err(archive)(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            })?)
        }
        unpack::Compression::None => Box::new(f),
    };
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(false);
    a.set_overwrite(true);
    for entry in a.entries().map_err(io_err(archive))? {
        let mut entry = entry.map_err(io_err(archive))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink => {
                entry.unpack_in(dest).map_err(io_err(archive))?;
            }
            _ => {}
        }
    }
    Ok(())
}

static UNIQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn uniq() -> u64 {
    UNIQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        uniq()
    ));
    {
        let mut f = fs::File::create(&tmp)?;
        io::Write::write_all(&mut f, data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

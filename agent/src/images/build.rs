//! A small image builder: layers from files on the host or in memory, written
//! as an OCI image layout (directory) or a `docker save` archive. The test
//! suite uses it to make its images from Debian's `busybox-static`, with no
//! network.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::unpack::hex;
use super::{media_types, ExecConfig};

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum LayerEntry {
    /// A directory.
    Dir {
        /// Path in the image.
        path: String,
        /// Mode bits.
        mode: u32,
    },
    /// A file with the given content.
    File {
        /// Path in the image.
        path: String,
        /// Content.
        data: Vec<u8>,
        /// Mode bits.
        mode: u32,
    },
    /// A file copied from the host.
    HostFile {
        /// Path in the image.
        path: String,
        /// Path on the host.
        source: PathBuf,
        /// Mode bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Path in the image.
        path: String,
        /// Link target.
        target: String,
    },
    /// A hard link to an earlier entry of the same layer.
    HardLink {
        /// Path in the image.
        path: String,
        /// Path of the earlier entry.
        target: String,
    },
    /// An OCI whiteout hiding `path` of a lower layer.
    Whiteout {
        /// The path hidden.
        path: String,
    },
}

/// Layer compression for the built image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// An image to build.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    /// Full name with tag (`bramble.test/busybox:1`).
    pub name: String,
    /// GOARCH name (`amd64`, `arm64`).
    pub architecture: String,
    /// ARM variant (`v6`, `v7`, `v8`), if any.
    pub variant: Option<String>,
    /// Execution defaults.
    pub config: ExecConfig,
    /// Layers, bottom first.
    pub layers: Vec<Vec<LayerEntry>>,
    /// How layers are compressed.
    pub compression: LayerCompression,
}

struct BuiltLayer {
    blob: Vec<u8>,
    diff_id: String,
    media_type: &'static str,
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

impl ImageBuilder {
    /// A builder for the node's architecture with gzip layers.
    pub fn new(name: &str) -> ImageBuilder {
        let platform = super::node_platform();
        ImageBuilder {
            name: name.to_string(),
            architecture: platform.split('/').nth(1).unwrap_or("amd64").to_string(),
            variant: None,
            config: ExecConfig::default(),
            layers: Vec::new(),
            compression: LayerCompression::Gzip,
        }
    }

    fn build_layer(&self, entries: &[LayerEntry]) -> io::Result<BuiltLayer> {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        let header = |kind: tar::EntryType, mode: u32, size: u64| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h
        };
        for e in entries {
            match e {
                LayerEntry::Dir { path, mode } => {
                    let mut h = header(tar::EntryType::Directory, *mode, 0);
                    b.append_data(&mut h, path, io::empty())?;
                }
                LayerEntry::File { path, data, mode } => {
                    let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                    b.append_data(&mut h, path, &data[..])?;
                }
                LayerEntry::HostFile { path, source, mode } => {
                    let data = fs::read(source)?;
                    let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                    b.append_data(&mut h, path, &data[..])?;
                }
                LayerEntry::Symlink { path, target } => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, path, target)?;
                }
                LayerEntry::HardLink { path, target } => {
                    let mut h = header(tar::EntryType::Link, 0o644, 0);
                    b.append_link(&mut h, path, target)?;
                }
                LayerEntry::Whiteout { path } => {
                    let p = Path::new(path);
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let wh = p
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(format!(".wh.{name}"));
                    let mut h = header(tar::EntryType::Regular, 0o644, 0);
                    b.append_data(&mut h, wh, io::empty())?;
                }
            }
        }
        let tar = b.into_inner()?;
        let diff_id = sha(&tar);
        let (blob, media_type) = match self.compression {
            LayerCompression::None => (tar, media_types::LAYER_TAR),
            LayerCompression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&tar)?;
                (enc.finish()?, media_types::LAYER_GZIP)
            }
            LayerCompression::Zstd => {
                let out = ruzstd::encoding::compress_to_vec(
                    &tar[..],
                    ruzstd::encoding::CompressionLevel::Fastest,
                );
                (out, media_types::LAYER_ZSTD)
            }
        };
        Ok(BuiltLayer {
            blob,
            diff_id,
            media_type,
        })
    }

    fn config_json(&self, layers: &[BuiltLayer]) -> io::Result<Vec<u8>> {
        let mut config = serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        if let Some(v) = &self.variant {
            config["variant"] = serde_json::Value::String(v.clone());
        }
        serde_json::to_vec(&config).map_err(io::Error::other)
    }

    /// Writes an OCI image layout into `dir` (created if needed).
    pub fn write_oci_layout(&self, dir: &Path) -> io::Result<()> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        let put = |data: &[u8]| -> io::Result<String> {
            let d = sha(data);
            fs::write(blobs.join(&d["sha256:".len()..]), data)?;
            Ok(d)
        };
        let layers = self
            .layers
            .iter()
            .map(|l| self.build_layer(l))
            .collect::<io::Result<Vec<_>>>()?;
        let config = self.config_json(&layers)?;
        let config_digest = put(&config)?;
        let mut layer_descs = Vec::new();
        for l in &layers {
            let d = put(&l.blob)?;
            layer_descs.push(
                serde_json::json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()}),
            );
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::MANIFEST,
            "config": {"mediaType": media_types::CONFIG, "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        }))
        .map_err(io::Error::other)?;
        let manifest_digest = put(&manifest)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::INDEX,
            "manifests": [{
                "mediaType": media_types::MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {"io.containerd.image.name": self.name, "org.opencontainers.image.ref.name": self.name.rsplit(':').next().unwrap_or("latest")},
            }],
        });
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).map_err(io::Error::other)?,
        )?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(())
    }

    /// Writes a classic `docker save` archive (uncompressed tar) to `file`.
    pub fn write_docker_archive(&self, file: &Path) -> io::Result<()> {
        let layers = self
            .layers
            .iter()
            .map(|l| self.build_layer(l))
            .collect::<io::Result<Vec<_>>>()?;
        let config = self.config_json(&layers)?;
        let config_name = format!("{}.json", &sha(&config)["sha256:".len()..]);
        let mut b = tar::Builder::new(fs::File::create(file)?);
        let mut add = |name: &str, data: &[u8]| -> io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data)
        };
        add(&config_name, &config)?;
        let mut layer_names = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let name = format!("layer{i}/layer.tar");
            add(&name, &l.blob)?;
            layer_names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [self.name],
            "Layers": layer_names,
        }]);
        add(
            "manifest.json",
            &serde_json::to_vec(&manifest).map_err(io::Error::other)?,
        )?;
        b.into_inner()?.sync_all()
    }
}

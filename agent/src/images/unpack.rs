//! Unpacking one image layer (a tar, plain, gzip or zstd) into a directory
//! that overlayfs can use as a lower layer: OCI whiteouts become overlay
//! whiteouts (0/0 character devices), opaque markers become the
//! `trusted.overlay.opaque` xattr, hard links are kept, device nodes are
//! skipped (a container gets its own `/dev`).

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Compression of a layer blob, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Detects the compression of a blob from its magic number.
pub fn detect_compression(path: &Path) -> io::Result<Compression> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path)?;
    let n = f.read(&mut magic)?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

/// A reader that hashes what passes through it (to check the layer's diff ID).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What unpacking a layer found worth reporting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// `sha256:` digest of the uncompressed tar (the layer's diff ID).
    pub diff_id: String,
    /// Device nodes that were skipped.
    pub skipped_devices: Vec<String>,
}

/// Unpacks the layer blob at `blob` into `dest` (which must exist and be
/// empty), returning the diff ID of the uncompressed stream.
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<UnpackReport, ImageError> {
    let ctx = |e: io::Error| ImageError::Layer {
        blob: blob.display().to_string(),
        source: e,
    };
    let file = BufReader::new(fs::File::open(blob).map_err(ctx)?);
    let reader: Box<dyn Read> = match detect_compression(blob).map_err(ctx)? {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(file)
                .map_err(|e| ctx(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?,
        ),
    };
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    };
    let mut report = UnpackReport::default();
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        for entry in archive.entries().map_err(ctx)? {
            let mut entry = entry.map_err(ctx)?;
            let path = entry.path().map_err(ctx)?.into_owned();
            let rel = clean_relative(&path).ok_or_else(|| ImageError::UnsafePath {
                path: path.display().to_string(),
            })?;
            let Some(file_name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_string)
            else {
                // The root directory itself.
                continue;
            };
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            if file_name == OPAQUE_MARKER {
                fs::create_dir_all(&parent).map_err(ctx)?;
                set_opaque(&parent).map_err(ctx)?;
                continue;
            }
            if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
                fs::create_dir_all(&parent).map_err(ctx)?;
                let target = parent.join(hidden);
                remove_any(&target).map_err(ctx)?;
                make_whiteout(&target).map_err(ctx)?;
                continue;
            }
            match entry.header().entry_type() {
                tar::EntryType::Char | tar::EntryType::Block => {
                    report.skipped_devices.push(rel.display().to_string());
                    continue;
                }
                tar::EntryType::Fifo => {
                    fs::create_dir_all(&parent).map_err(ctx)?;
                    let target = parent.join(&file_name);
                    remove_any(&target).map_err(ctx)?;
                    let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                    nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))
                        .map_err(|e| ctx(e.into()))?;
                    continue;
                }
                _ => {}
            }
            // A later layer may replace a directory with a file or the other
            // way round inside the same tar; tar's unpack handles files and
            // `unpack_in` refuses paths escaping `dest` through symlinks.
            if entry.header().entry_type() != tar::EntryType::Directory {
                let target = dest.join(&rel);
                if target
                    .symlink_metadata()
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
                {
                    fs::remove_dir_all(&target).map_err(ctx)?;
                }
            }
            entry.unpack_in(dest).map_err(ctx)?;
        }
    }
    // Drain any trailing padding so the digest covers the whole stream.
    io::copy(&mut hashing, &mut io::sink()).map_err(ctx)?;
    report.diff_id = format!("sha256:{}", hex(&hashing.hasher.finalize()));
    Ok(report)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `path` with `.` and leading `/` removed; `None` when it climbs out with `..`.
fn clean_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_whiteout(path: &Path) -> io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
}

fn set_opaque(dir: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    crate::runtime::sys::lsetxattr(&p, c"trusted.overlay.opaque", b"y")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlay_markers() {
        let dir = tempfile::tempdir().expect("tmp");
        let blob = dir.path().join("blob");
        let data = tar_with(&[
            ("etc/", None),
            ("etc/.wh.gone", Some(b"")),
            ("var/", None),
            ("var/.wh..wh..opq", Some(b"")),
            ("var/new", Some(b"x")),
        ]);
        fs::write(&blob, &data).expect("write");
        let out = dir.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        let report = unpack_layer(&blob, &out).expect("unpack");
        assert_eq!(
            report.diff_id,
            format!("sha256:{}", hex(&Sha256::digest(&data)))
        );
        use std::os::unix::fs::FileTypeExt;
        let wh = out.join("etc/gone").symlink_metadata().expect("whiteout");
        assert!(wh.file_type().is_char_device());
        assert_eq!(fs::read(out.join("var/new")).expect("read"), b"x");
    }

    #[test]
    fn refuses_paths_that_climb_out() {
        let dir = tempfile::tempdir().expect("tmp");
        let blob = dir.path().join("blob");
        // tar::Builder refuses `..`, so write the name into the header by hand.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        {
            let gnu = h.as_gnu_mut().expect("gnu");
            gnu.name[..8].copy_from_slice(b"../evil\0");
        }
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).expect("append");
        fs::write(&blob, b.into_inner().expect("tar")).expect("write");
        let out = dir.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        assert!(matches!(
            unpack_layer(&blob, &out),
            Err(ImageError::UnsafePath { .. })
        ));
    }
}

//! The external tools that edit file systems inside a disk image without
//! mounting it: e2fsprogs' `debugfs` for the ext4 root and mtools for the FAT
//! boot partition. Both address a partition by its byte offset in the image
//! (`IMAGE?offset=N` for debugfs, `IMAGE@@N` for mtools).
//!
//! Every command runs in a private scratch directory where `disk` is a
//! symbolic link to the image, so user paths with spaces, `?` or `@` never
//! reach a tool's own path syntax.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::DeviceImageError;

/// A scratch directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Create `PARENT/.bramble-device-image-PID-N` with `disk` linking to `image`.
    pub fn new(parent: &Path, image: &Path) -> Result<Self, DeviceImageError> {
        let pid = std::process::id();
        for n in 0..1000 {
            let dir = parent.join(format!(".bramble-device-image-{pid}-{n}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let scratch = Self { dir };
                    let image = std::path::absolute(image)
                        .map_err(|e| DeviceImageError::io("resolve", image, e))?;
                    let link = scratch.dir.join("disk");
                    std::os::unix::fs::symlink(&image, &link)
                        .map_err(|e| DeviceImageError::io("create symlink", &link, e))?;
                    return Ok(scratch);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(DeviceImageError::io("create directory", &dir, e)),
            }
        }
        Err(DeviceImageError::io(
            "create directory",
            parent,
            std::io::Error::other(
                "too many leftover scratch directories: remove .bramble-device-image-* there",
            ),
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Write a file into the scratch directory; returns its name (relative).
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<String, DeviceImageError> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| DeviceImageError::io("write", &path, e))?;
        Ok(name.to_owned())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover directory is harmless and named clearly.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run a tool, mapping "not installed" to an error that names the package.
fn run(
    mut cmd: Command,
    tool: &'static str,
    package: &'static str,
) -> Result<Output, DeviceImageError> {
    cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DeviceImageError::ToolMissing { tool, package }
        } else {
            DeviceImageError::ToolFailed {
                tool,
                detail: e.to_string(),
            }
        }
    })
}

/// debugfs prints its version banner on stderr; everything else there is an error.
fn debugfs_errors(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("debugfs "))
        .map(str::to_owned)
        .collect()
}

/// An ext2/3/4 file system inside the image at `offset`, edited with debugfs.
#[derive(Debug)]
pub struct ExtFs<'a> {
    scratch: &'a Scratch,
    offset: u64,
}

impl<'a> ExtFs<'a> {
    /// The file system at byte `offset` of the scratch's `disk`.
    pub fn new(scratch: &'a Scratch, offset: u64) -> Self {
        Self { scratch, offset }
    }

    fn device(&self) -> String {
        format!("disk?offset={}", self.offset)
    }

    fn debugfs<I, S>(&self, args: I) -> Result<Output, DeviceImageError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("debugfs");
        cmd.args(args).current_dir(self.scratch.path());
        run(cmd, "debugfs", "e2fsprogs")
    }

    /// The content of a file, `None` if it does not exist. Read-only.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, DeviceImageError> {
        let out = self.debugfs(["-R".to_owned(), format!("cat \"{path}\""), self.device()])?;
        let errors = debugfs_errors(&out.stderr);
        if errors.iter().any(|e| e.contains("not found")) {
            return Ok(None);
        }
        if !errors.is_empty() || !out.status.success() {
            return Err(DeviceImageError::ToolFailed {
                tool: "debugfs",
                detail: errors.join("; "),
            });
        }
        Ok(Some(out.stdout))
    }

    /// `stat` output of a path, `None` if it does not exist. Read-only.
    pub fn stat(&self, path: &str) -> Result<Option<String>, DeviceImageError> {
        let out = self.debugfs(["-R".to_owned(), format!("stat \"{path}\""), self.device()])?;
        let errors = debugfs_errors(&out.stderr);
        if errors.iter().any(|e| e.contains("not found")) {
            return Ok(None);
        }
        if !errors.is_empty() || !out.status.success() {
            return Err(DeviceImageError::ToolFailed {
                tool: "debugfs",
                detail: errors.join("; "),
            });
        }
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// Run debugfs commands in write mode; any error message fails the call
    /// (debugfs itself exits 0 whatever happens).
    pub fn script(&self, commands: &[String]) -> Result<(), DeviceImageError> {
        let name = self
            .scratch
            .put("debugfs.cmds", commands.join("\n").as_bytes())?;
        let out = self.debugfs(["-w".to_owned(), "-f".to_owned(), name, self.device()])?;
        let errors = debugfs_errors(&out.stderr);
        if !out.status.success() || !errors.is_empty() {
            return Err(DeviceImageError::ToolFailed {
                tool: "debugfs",
                detail: errors.join("; "),
            });
        }
        Ok(())
    }
}

/// A FAT file system inside the image at `offset`, edited with mtools.
#[derive(Debug)]
pub struct FatFs<'a> {
    scratch: &'a Scratch,
    offset: u64,
}

impl<'a> FatFs<'a> {
    /// The file system at byte `offset` of the scratch's `disk`.
    pub fn new(scratch: &'a Scratch, offset: u64) -> Self {
        Self { scratch, offset }
    }

    fn mtool(&self, tool: &'static str, args: &[&str]) -> Result<Output, DeviceImageError> {
        let mut cmd = Command::new(tool);
        cmd.arg("-i")
            .arg(format!("disk@@{}", self.offset))
            .args(args)
            .current_dir(self.scratch.path())
            // Ignore any user mtools configuration and the geometry sanity
            // checks that reject file systems made outside DOS.
            .env("MTOOLSRC", "/dev/null")
            .env("MTOOLS_SKIP_CHECK", "1");
        run(cmd, tool, "mtools")
    }

    /// The content of a file in the root directory, `None` if it is missing.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DeviceImageError> {
        let out = self.mtool("mtype", &[&format!("::/{name}")])?;
        if out.status.success() {
            return Ok(Some(out.stdout));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("not found") {
            return Ok(None);
        }
        Err(DeviceImageError::ToolFailed {
            tool: "mtype",
            detail: stderr.trim().to_owned(),
        })
    }

    /// Replace (or create) a file in the root directory.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), DeviceImageError> {
        let local = self.scratch.put(&format!("fat-{name}"), bytes)?;
        let out = self.mtool("mcopy", &["-o", "-D", "o", &local, &format!("::/{name}")])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(DeviceImageError::ToolFailed {
                tool: "mcopy",
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

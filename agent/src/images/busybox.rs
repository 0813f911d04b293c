//! Test images made from Debian's `busybox-static`, with no network: the
//! busybox binary and its applets, `/etc/passwd`, a web root. The test
//! suites and benchmarks of every crate build their images with this.

use super::build::{ImageBuilder, LayerEntry};
use super::ExecConfig;

/// Path of the static busybox from Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";
/// What the images' `/www/index.html` holds (without its newline): what
/// `httpd -h /www` serves.
pub const INDEX_HTML: &str = "hello from bramble httpd";

/// Makes sure `busybox-static` is installed (installing it with apt-get if
/// needed), or says what to do.
pub fn ensure_busybox() -> Result<(), String> {
    if is_static_busybox() {
        return Ok(());
    }
    let _ = std::process::Command::new("apt-get")
        .args(["install", "-y", "busybox-static"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if is_static_busybox() {
        Ok(())
    } else {
        Err(format!(
            "a static busybox is needed at {BUSYBOX}: run `apt-get install -y busybox-static`"
        ))
    }
}

/// Whether [`BUSYBOX`] is a static ELF file (no `PT_INTERP` program
/// header): the dynamic `busybox` package would not run in an empty rootfs.
pub fn is_static_busybox() -> bool {
    match std::fs::read(BUSYBOX) {
        Ok(bytes) => is_static_elf(&bytes),
        Err(_) => false,
    }
}

/// Whether `b` is an ELF file without a `PT_INTERP` program header. Reads
/// only within `b`, in 64-bit arithmetic (this runs on 32-bit ARM too).
fn is_static_elf(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return false;
    }
    let at = |o: u64, n: usize| -> Option<u64> {
        let start = usize::try_from(o).ok()?;
        let bytes = b.get(start..start.checked_add(n)?)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)),
        )
    };
    let header = if b[4] == 2 {
        (at(0x20, 8), at(0x36, 2), at(0x38, 2))
    } else {
        (at(0x1c, 4), at(0x2a, 2), at(0x2c, 2))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = header else {
        return false;
    };
    (0..phnum).all(|i| {
        let entry = phoff.checked_add(i.saturating_mul(phentsize));
        entry.and_then(|o| at(o, 4)).is_some_and(|kind| kind != 3)
    })
}

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "httpd", "wget", "ls", "head", "tr", "dd", "true", "false",
    "mkdir", "hostname", "env", "nc", "ps", "id", "touch", "test", "[", "seq", "grep", "rm",
    "timeout", "tar", "wc", "tty",
];

/// The layer every test image has: busybox and its applets, `/etc/passwd`,
/// a web root.
pub fn busybox_layer() -> Vec<LayerEntry> {
    let mut l = vec![];
    for d in ["bin", "etc", "proc", "sys", "dev", "root", "www", "var"] {
        l.push(LayerEntry::Dir {
            path: d.into(),
            mode: 0o755,
        });
    }
    l.push(LayerEntry::Dir {
        path: "tmp".into(),
        mode: 0o1777,
    });
    l.push(LayerEntry::HostFile {
        path: "bin/busybox".into(),
        source: BUSYBOX.into(),
        mode: 0o755,
    });
    for a in APPLETS {
        l.push(LayerEntry::Symlink {
            path: format!("bin/{a}"),
            target: "busybox".into(),
        });
    }
    l.push(LayerEntry::File {
        path: "etc/passwd".into(),
        data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n".to_vec(),
        mode: 0o644,
    });
    l.push(LayerEntry::File {
        path: "etc/group".into(),
        data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        mode: 0o644,
    });
    l.push(LayerEntry::File {
        path: "www/index.html".into(),
        data: format!("{INDEX_HTML}\n").into_bytes(),
        mode: 0o644,
    });
    l
}

/// A busybox image named `name` whose default command is `cmd`.
pub fn busybox_image(name: &str, cmd: &[&str]) -> ImageBuilder {
    let mut b = ImageBuilder::new(name);
    b.layers.push(busybox_layer());
    b.config = ExecConfig {
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        env: Some(vec!["PATH=/bin".into()]),
        working_dir: Some("/".into()),
        ..Default::default()
    };
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interpreter_is_detected() {
        // A 64-bit little-endian ELF header with one program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x20] = 64; // e_phoff
        elf[0x36] = 56; // e_phentsize
        elf[0x38] = 1; // e_phnum
        elf[64] = 1; // PT_LOAD
        assert!(is_static_elf(&elf));
        elf[64] = 3; // PT_INTERP
        assert!(!is_static_elf(&elf));
        elf[0x20] = 0xff; // program headers beyond the file
        assert!(!is_static_elf(&elf));
        assert!(!is_static_elf(
            b"not an elf file at all, just some text...........................!"
        ));
    }
}

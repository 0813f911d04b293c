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
    let Ok(b) = std::fs::read(BUSYBOX) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return false;
    }
    let u16le = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32le = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
    let (phoff, phentsize, phnum) = if b[4] == 2 {
        (u32le(0x20) | (u32le(0x24) << 32), u16le(0x36), u16le(0x38))
    } else {
        (u32le(0x1c), u16le(0x2a), u16le(0x2c))
    };
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32le(o) != 3
    })
}

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "httpd", "wget", "ls", "head", "tr", "dd", "true", "false",
    "mkdir", "hostname", "env", "nc", "ps", "id", "touch", "test", "[", "seq", "grep", "rm",
    "timeout",
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

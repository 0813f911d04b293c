//! `bramble device-image build` on synthetic disk images shaped like
//! Raspberry Pi OS: an MBR, a FAT32 boot partition with `cmdline.txt` and
//! `config.txt`, an ext4 root with `/etc` and `/etc/systemd/system`. Images are
//! made without root (sfdisk, mkfs.fat, mtools, `mke2fs -d`) and every file the
//! builder wrote is read back with debugfs and mtools.
//!
//! The tools are installed with apt-get when missing; if that fails the tests
//! fail, naming what is missing. They never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
/// Partition layout of the synthetic image (in 512-byte sectors).
const BOOT_START: u64 = 2048;
const BOOT_SECTORS: u64 = 36 * MIB / 512;
const ROOT_START: u64 = BOOT_START + BOOT_SECTORS;
const ROOT_SECTORS: u64 = 24 * MIB / 512;
const PI_CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";
const PI_CONFIG: &str = "# For more options and information see\n# http://rpf.io/configtxt\ndtparam=audio=on\ncamera_auto_detect=1\ndisplay_auto_detect=1\narm_64bit=1\n";
const PI_HOSTS: &str =
    "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\n\n127.0.1.1\t\traspberrypi\n";
const MASTER: &str = "mqtt://192.168.1.10:1883";

// ---------------------------------------------------------------------------
// tools

/// Make sure the tools exist: install their Debian packages once if not.
fn tools() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let needed = [
            ("sfdisk", "fdisk"),
            ("mkfs.fat", "dosfstools"),
            ("fsck.fat", "dosfstools"),
            ("mcopy", "mtools"),
            ("mtype", "mtools"),
            ("mke2fs", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
            ("e2fsck", "e2fsprogs"),
        ];
        let missing = |needed: &[(&str, &'static str)]| -> Vec<&'static str> {
            let mut packages: Vec<&'static str> = needed
                .iter()
                .filter(|(tool, _)| !on_path(tool))
                .map(|(_, package)| *package)
                .collect();
            packages.dedup();
            packages
        };
        let packages = missing(&needed);
        if packages.is_empty() {
            return Ok(());
        }
        eprintln!("installing {packages:?} for the device image tests");
        let install = |pkgs: &[&str]| {
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install(&packages) {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            install(&packages);
        }
        let still = missing(&needed);
        if still.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "missing tools for the device image tests: install {} (apt-get install ...)",
                still.join(" ")
            ))
        }
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(tool).is_file())
        })
        .unwrap_or(false)
}

/// Run a command, panic with its output if it fails; returns stdout.
fn sh(program: &str, args: &[&str], cwd: &Path) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read image");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// fixtures

/// A fake ELF executable header for a CPU (enough for the builder's check).
fn fake_elf(machine: u16, class64: bool, payload: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = if class64 { 2 } else { 1 };
    elf[5] = 1; // little endian
    elf[6] = 1;
    elf[16] = 2; // ET_EXEC
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(payload);
    elf
}

const EM_AARCH64: u16 = 183;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
/// Shape::machine for a root whose /usr/bin/sh is a script, not ELF.
const NOT_ELF: u16 = 0;

/// How to shape the synthetic image.
struct Shape {
    /// e_machine of the root's /usr/bin/sh.
    machine: u16,
    /// Write cmdline.txt into the boot partition.
    cmdline: bool,
    /// Partition table label for sfdisk ("dos" or "gpt").
    label: &'static str,
    /// Put an ext4 file system in the root partition.
    ext4_root: bool,
}

const PI64: Shape = Shape {
    machine: EM_AARCH64,
    cmdline: true,
    label: "dos",
    ext4_root: true,
};

/// Build a Raspberry-Pi-OS-shaped disk image in `dir`, without root.
fn make_image(dir: &Path, name: &str, shape: &Shape) -> PathBuf {
    tools();
    let work = dir.join(format!("{name}.parts"));
    let root = work.join("root");
    for d in ["etc/systemd/system", "usr/bin", "var/lib", "boot/firmware"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let files: [(&str, Vec<u8>); 5] = [
        ("etc/hostname", b"raspberrypi\n".to_vec()),
        ("etc/hosts", PI_HOSTS.as_bytes().to_vec()),
        (
            "etc/os-release",
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n".to_vec(),
        ),
        ("etc/fstab", b"proc /proc proc defaults 0 0\n".to_vec()),
        (
            "usr/bin/sh",
            match shape.machine {
                NOT_ELF => b"#!/bin/busybox sh\n".to_vec(),
                machine => fake_elf(machine, machine != EM_ARM, b"fake shell"),
            },
        ),
    ];
    for (path, bytes) in files {
        std::fs::write(root.join(path), bytes).expect("write fixture file");
    }
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("symlink /bin");

    let boot_kib = (BOOT_SECTORS * 512 / 1024).to_string();
    sh(
        "mkfs.fat",
        &[
            "-F", "32", "-s", "1", "-n", "bootfs", "-C", "boot.fat", &boot_kib,
        ],
        &work,
    );
    std::fs::write(work.join("config.txt"), PI_CONFIG).expect("write config.txt");
    std::fs::write(work.join("cmdline.txt"), PI_CMDLINE).expect("write cmdline.txt");
    sh(
        "mcopy",
        &["-i", "boot.fat", "config.txt", "::/config.txt"],
        &work,
    );
    if shape.cmdline {
        sh(
            "mcopy",
            &["-i", "boot.fat", "cmdline.txt", "::/cmdline.txt"],
            &work,
        );
    }

    let rootfs = work.join("root.ext4");
    if shape.ext4_root {
        let blocks = (ROOT_SECTORS * 512 / 1024).to_string();
        sh(
            "mke2fs",
            &[
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                "1024",
                "-E",
                "root_owner=0:0",
                "-d",
                "root",
                "root.ext4",
                &blocks,
            ],
            &work,
        );
    } else {
        std::fs::write(&rootfs, vec![0u8; 4096]).expect("write junk root");
    }

    let image = dir.join(format!("{name}.img"));
    let total = (ROOT_START + ROOT_SECTORS + 2048) * 512;
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(total))
        .expect("create image");
    let table = format!(
        "label: {}\nstart={BOOT_START}, size={BOOT_SECTORS}, type={}\nstart={ROOT_START}, size={ROOT_SECTORS}, type={}\n",
        shape.label,
        if shape.label == "gpt" { "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" } else { "c" },
        if shape.label == "gpt" { "0FC63DAF-8483-4772-8E79-3D69D8477DE4" } else { "83" },
    );
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&image)
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run sfdisk");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(table.as_bytes())
            .expect("feed sfdisk");
    }
    assert!(
        child.wait().expect("sfdisk").success(),
        "sfdisk failed on {table}"
    );
    let img = image.to_string_lossy().into_owned();
    for (part, start) in [("boot.fat", BOOT_START), ("root.ext4", ROOT_START)] {
        sh(
            "dd",
            &[
                &format!("if={part}"),
                &format!("of={img}"),
                "bs=512",
                &format!("seek={start}"),
                "conv=notrunc,sparse",
                "status=none",
            ],
            &work,
        );
    }
    std::fs::remove_dir_all(&work).expect("clean fixture parts");
    image
}

// ---------------------------------------------------------------------------
// reading an image back

fn root_dev(image: &Path) -> String {
    format!("{}?offset={}", image.display(), ROOT_START * 512)
}

fn debugfs(image: &Path, request: &str) -> (Vec<u8>, String) {
    let out = Command::new("debugfs")
        .args(["-R", request, &root_dev(image)])
        .output()
        .expect("run debugfs");
    let errors = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .collect::<Vec<_>>()
        .join("\n");
    (out.stdout, errors)
}

fn root_file(image: &Path, path: &str) -> Vec<u8> {
    let (bytes, errors) = debugfs(image, &format!("cat {path}"));
    assert!(errors.is_empty(), "reading {path}: {errors}");
    bytes
}

fn root_stat(image: &Path, path: &str) -> String {
    let (out, errors) = debugfs(image, &format!("stat {path}"));
    assert!(errors.is_empty(), "stat {path}: {errors}");
    String::from_utf8_lossy(&out).into_owned()
}

fn boot_file(image: &Path, name: &str) -> String {
    let dev = format!("{}@@{}", image.display(), BOOT_START * 512);
    String::from_utf8(sh(
        "mtype",
        &["-i", &dev, &format!("::/{name}")],
        Path::new("/"),
    ))
    .expect("utf-8")
}

/// e2fsck and fsck.fat find nothing wrong with either file system.
fn assert_clean(image: &Path) {
    let out = Command::new("e2fsck")
        .args(["-fn", &root_dev(image)])
        .output()
        .expect("run e2fsck");
    assert!(
        out.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = image.parent().expect("parent");
    let boot = dir.join("boot-check.fat");
    let img = image.to_string_lossy().into_owned();
    sh(
        "dd",
        &[
            &format!("if={img}"),
            &format!("of={}", boot.display()),
            "bs=512",
            &format!("skip={BOOT_START}"),
            &format!("count={BOOT_SECTORS}"),
            "status=none",
        ],
        dir,
    );
    sh("fsck.fat", &["-n", &boot.to_string_lossy()], dir);
    std::fs::remove_file(boot).expect("rm boot copy");
}

// ---------------------------------------------------------------------------
// running the builder

/// Run the real `bramble device-image build` with `args`: stdout on
/// success, stderr on failure.
fn build(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bramble"))
        .args(["device-image", "build"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run bramble: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn agent_bin(dir: &Path, machine: u16) -> (PathBuf, Vec<u8>) {
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let bytes = fake_elf(machine, machine != EM_ARM, &payload);
    let path = dir.join(format!("bramble-agent-{machine}"));
    std::fs::write(&path, &bytes).expect("write fake agent");
    (path, bytes)
}

/// Take the agent and its config out of an image and run `check-config`
/// under qemu, as the device would at boot.
fn run_agent_from_image(image: &Path, dir: &Path) {
    let agent = dir.join("agent-from-image");
    let config = dir.join("agent-from-image.toml");
    std::fs::write(&agent, root_file(image, "/usr/local/bin/bramble-agent")).expect("write agent");
    std::fs::write(&config, root_file(image, "/etc/bramble/agent.toml")).expect("write config");
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = Command::new("qemu-aarch64-static")
        .args(["-cpu", "cortex-a53"])
        .arg(&agent)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run qemu-aarch64-static (apt-get install qemu-user-static)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "agent from the image refused its config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("node = \"pi-01\"") && stdout.contains("token = \"<redacted>\""),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------
// tests

#[test]
fn builds_a_joined_node_image_and_leaves_the_input_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = make_image(dir.path(), "raspios", &PI64);
    let before = sha256(&input);
    // cross/test sets BRAMBLE_TEST_AGENT_AARCH64 to the real cross-built agent:
    // then the agent inside the image is also run under qemu on its config.
    let real_agent = std::env::var_os("BRAMBLE_TEST_AGENT_AARCH64").map(PathBuf::from);
    let (agent, agent_bytes) = match &real_agent {
        Some(path) => (
            path.clone(),
            std::fs::read(path).expect("read BRAMBLE_TEST_AGENT_AARCH64"),
        ),
        None => agent_bin(dir.path(), EM_AARCH64),
    };
    let output = dir.path().join("pi-01.img");

    let report = build(&[
        "--input",
        s(&input),
        "--output",
        s(&output),
        "--master",
        MASTER,
        "--node",
        "pi-01",
        "--token",
        "tok-123.abc",
        "--agent-bin",
        s(&agent),
    ])
    .expect("build");
    assert!(
        report.contains("node pi-01 (hostname pi-01), aarch64 agent"),
        "{report}"
    );
    assert!(
        report.contains("added cgroup_enable=memory cgroup_memory=1"),
        "{report}"
    );
    assert_eq!(sha256(&input), before, "the input image was modified");
    assert!(!dir.path().join("pi-01.img.partial").exists());

    // Agent binary, root-owned and executable.
    assert_eq!(
        root_file(&output, "/usr/local/bin/bramble-agent"),
        agent_bytes
    );
    let stat = root_stat(&output, "/usr/local/bin/bramble-agent");
    assert!(
        stat.contains("Mode:  0755") && stat.contains("User:     0   Group:     0"),
        "{stat}"
    );
    // The unit, the same bytes as systemd/bramble-agent.service, and enabled.
    let unit = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/bramble-agent.service"
    ))
    .expect("unit");
    assert_eq!(
        root_file(&output, "/etc/systemd/system/bramble-agent.service"),
        unit
    );
    let link = root_stat(
        &output,
        "/etc/systemd/system/multi-user.target.wants/bramble-agent.service",
    );
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(
        link.contains("Fast link dest: \"/etc/systemd/system/bramble-agent.service\""),
        "{link}"
    );
    // Config: exact content, readable by root only.
    let config = String::from_utf8(root_file(&output, "/etc/bramble/agent.toml")).expect("utf-8");
    assert!(
        config.ends_with(
            "master = \"mqtt://192.168.1.10:1883\"\nnode = \"pi-01\"\ntoken = \"tok-123.abc\"\n"
        ),
        "{config}"
    );
    let stat = root_stat(&output, "/etc/bramble/agent.toml");
    assert!(
        stat.contains("Mode:  0600") && stat.contains("User:     0"),
        "{stat}"
    );
    // Host name.
    assert_eq!(root_file(&output, "/etc/hostname"), b"pi-01\n");
    let hosts = String::from_utf8(root_file(&output, "/etc/hosts")).expect("utf-8");
    assert!(
        hosts.contains("\n127.0.1.1\tpi-01\n") && !hosts.contains("raspberrypi"),
        "{hosts}"
    );
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    // Untouched files stay as they were.
    assert!(String::from_utf8(root_file(&output, "/etc/os-release"))
        .expect("utf-8")
        .contains("bookworm"));
    // Boot partition: the cgroup flags on the one line, config.txt as it was.
    let cmdline = boot_file(&output, "cmdline.txt");
    assert_eq!(
        cmdline,
        format!(
            "{} cgroup_enable=memory cgroup_memory=1\n",
            PI_CMDLINE.trim_end()
        )
    );
    assert_eq!(boot_file(&output, "config.txt"), PI_CONFIG);
    assert_eq!(boot_file(&input, "cmdline.txt"), PI_CMDLINE);
    assert_clean(&output);
    if real_agent.is_some() {
        run_agent_from_image(&output, dir.path());
    }

    // A second pass over the result: nothing duplicated.
    let again = dir.path().join("pi-01-again.img");
    let report = build(&[
        "--input",
        s(&output),
        "--output",
        s(&again),
        "--master",
        MASTER,
        "--node",
        "pi-01",
        "--token",
        "tok-123.abc",
        "--agent-bin",
        s(&agent),
        "--hostname",
        "edge-1",
    ])
    .expect("second build");
    assert!(report.contains("cgroup flags already present"), "{report}");
    assert_eq!(boot_file(&again, "cmdline.txt"), cmdline);
    assert_eq!(root_file(&again, "/etc/hostname"), b"edge-1\n");
    let hosts = String::from_utf8(root_file(&again, "/etc/hosts")).expect("utf-8");
    assert_eq!(hosts.matches("127.0.1.1").count(), 1, "{hosts}");
    assert!(hosts.contains("127.0.1.1\tedge-1\n"), "{hosts}");
    assert_clean(&again);
}

#[test]
fn a_32_bit_image_gets_the_armv6_agent_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = make_image(
        dir.path(),
        "raspios-armhf",
        &Shape {
            machine: EM_ARM,
            ..PI64
        },
    );
    let (arm, arm_bytes) = agent_bin(dir.path(), EM_ARM);
    let (arm64, _) = agent_bin(dir.path(), EM_AARCH64);
    let out = dir.path().join("zero.img");
    let common = ["--master", MASTER, "--node", "zero-1", "--token", "t"];
    let report = build(
        &[
            &[
                "--input",
                s(&input),
                "--output",
                s(&out),
                "--agent-bin",
                s(&arm),
            ][..],
            &common[..],
        ]
        .concat(),
    )
    .expect("build");
    assert!(
        report.contains("armv6 agent; image: 32-bit ARM, ext4 root"),
        "{report}"
    );
    assert_eq!(root_file(&out, "/usr/local/bin/bramble-agent"), arm_bytes);

    let out7 = dir.path().join("pi2.img");
    let report = build(
        &[
            &[
                "--input",
                s(&input),
                "--output",
                s(&out7),
                "--agent-bin",
                s(&arm),
                "--arch",
                "armv7",
            ][..],
            &common[..],
        ]
        .concat(),
    )
    .expect("build armv7");
    assert!(report.contains("armv7 agent"), "{report}");

    let wrong = dir.path().join("wrong.img");
    let err = build(
        &[
            &[
                "--input",
                s(&input),
                "--output",
                s(&wrong),
                "--agent-bin",
                s(&arm64),
            ][..],
            &common[..],
        ]
        .concat(),
    )
    .expect_err("aarch64 agent in a 32-bit image");
    assert!(
        err.contains("is for 64-bit ARM (aarch64), but the image needs armv6"),
        "{err}"
    );
    assert!(!wrong.exists() && !dir.path().join("wrong.img.partial").exists());
}

#[test]
fn fleet_mode_writes_one_image_per_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = make_image(dir.path(), "raspios", &PI64);
    let (agent, _) = agent_bin(dir.path(), EM_AARCH64);
    let fleet = dir.path().join("fleet.txt");
    std::fs::write(
        &fleet,
        "# printed by bramble node add --count 2 --prefix pi-\npi-1 token-one\n\npi-2\ttoken-two\n",
    )
    .expect("write fleet");
    let out_dir = dir.path().join("fleet");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let report = build(&[
        "--input",
        s(&input),
        "--fleet",
        s(&fleet),
        "--output-dir",
        s(&out_dir),
        "--master",
        MASTER,
        "--agent-bin",
        s(&agent),
    ])
    .expect("fleet build");
    assert_eq!(report.lines().count(), 2, "{report}");
    for (node, token) in [("pi-1", "token-one"), ("pi-2", "token-two")] {
        let image = out_dir.join(format!("{node}.img"));
        let config =
            String::from_utf8(root_file(&image, "/etc/bramble/agent.toml")).expect("utf-8");
        assert!(
            config.contains(&format!("node = \"{node}\"\ntoken = \"{token}\"\n")),
            "{config}"
        );
        assert_eq!(
            root_file(&image, "/etc/hostname"),
            format!("{node}\n").into_bytes()
        );
    }

    std::fs::write(&fleet, "pi-1 a\npi-1 b\n").expect("write fleet");
    let err = build(&[
        "--input",
        s(&input),
        "--fleet",
        s(&fleet),
        "--output-dir",
        s(&out_dir),
        "--master",
        MASTER,
        "--agent-bin",
        s(&agent),
        "--force",
    ])
    .expect_err("duplicate node");
    assert!(
        err.ends_with("fleet.txt:2: node pi-1 appears twice"),
        "{err}"
    );
    std::fs::write(&fleet, "Pi_1 a\n").expect("write fleet");
    let err = build(&[
        "--input",
        s(&input),
        "--fleet",
        s(&fleet),
        "--output-dir",
        s(&out_dir),
        "--master",
        MASTER,
    ])
    .expect_err("bad name");
    assert!(
        err.contains("fleet.txt:1: node \"Pi_1\": not a DNS-1123 subdomain"),
        "{err}"
    );
}

#[test]
fn refuses_what_it_does_not_understand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, _) = agent_bin(dir.path(), EM_AARCH64);
    let out = dir.path().join("out.img");
    let try_build = |input: &Path| {
        build(&[
            "--input",
            s(input),
            "--output",
            s(&out),
            "--master",
            MASTER,
            "--node",
            "pi-01",
            "--token",
            "t",
            "--agent-bin",
            s(&agent),
        ])
        .expect_err("refused")
    };

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a disk image\n".repeat(100)).expect("write");
    let err = try_build(&text);
    assert!(
        err.contains("no MBR partition table (the boot signature 55 AA is missing)"),
        "{err}"
    );

    let xz = dir.path().join("raspios.img.xz");
    std::fs::write(&xz, b"\xfd7zXZ\x00\x00\x04 and more").expect("write");
    assert!(try_build(&xz).contains("xz archive, not a disk image: decompress it first"));

    let gpt = make_image(
        dir.path(),
        "gpt",
        &Shape {
            label: "gpt",
            ..PI64
        },
    );
    let err = try_build(&gpt);
    assert!(err.contains("GPT images are not supported yet"), "{err}");

    let no_cmdline = make_image(
        dir.path(),
        "nocmdline",
        &Shape {
            cmdline: false,
            ..PI64
        },
    );
    let before = sha256(&no_cmdline);
    let err = try_build(&no_cmdline);
    assert!(
        err.contains("no cmdline.txt in the FAT boot partition"),
        "{err}"
    );
    assert_eq!(sha256(&no_cmdline), before);

    let no_ext4 = make_image(
        dir.path(),
        "noext4",
        &Shape {
            ext4_root: false,
            ..PI64
        },
    );
    let err = try_build(&no_ext4);
    assert!(
        err.contains("no ext4 root partition (partition 2: not an ext2/3/4 file system)"),
        "{err}"
    );

    let riscv = make_image(
        dir.path(),
        "riscv",
        &Shape {
            machine: 243,
            ..PI64
        },
    );
    let err = build(&[
        "--input",
        s(&riscv),
        "--output",
        s(&out),
        "--master",
        MASTER,
        "--node",
        "n",
        "--token",
        "t",
    ])
    .expect_err("riscv");
    assert!(
        err.contains("its programs are for ELF machine 243, which bramble has no agent for"),
        "{err}"
    );
    assert!(!out.exists(), "a refused build left an output");
    assert!(!dir.path().join("out.img.partial").exists());

    // No ELF program to tell the architecture: refused, unless --arch says.
    let script_only = make_image(
        dir.path(),
        "noelf",
        &Shape {
            machine: NOT_ELF,
            ..PI64
        },
    );
    let err = try_build(&script_only);
    assert!(
        err.contains(
            "no ELF program found in /usr/bin or /bin to tell the architecture: pass --arch"
        ),
        "{err}"
    );
    let report = build(&[
        "--input",
        s(&script_only),
        "--output",
        s(&out),
        "--master",
        MASTER,
        "--node",
        "n",
        "--token",
        "t",
        "--agent-bin",
        s(&agent),
        "--arch",
        "aarch64",
    ])
    .expect("--arch overrides detection");
    assert!(
        report.contains("aarch64 agent; image: unknown CPU, ext4 root"),
        "{report}"
    );

    assert!(
        std::fs::read_dir(dir.path()).expect("ls").all(|e| !e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with(".bramble-device-image")),
        "scratch directories left behind"
    );
}

#[test]
fn refuses_to_overwrite_or_misuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = make_image(dir.path(), "raspios", &PI64);
    let before = sha256(&input);
    let (agent, _) = agent_bin(dir.path(), EM_AARCH64);
    let (x86, _) = agent_bin(dir.path(), EM_X86_64);
    let args = |output: &Path, extra: &[&str]| -> Result<String, String> {
        let mut a = vec![
            "--input",
            s(&input),
            "--master",
            MASTER,
            "--node",
            "pi-01",
            "--token",
            "t",
        ];
        a.extend(["--output", s(output)]);
        a.extend(extra);
        build(&a.iter().map(|x| &**x).collect::<Vec<&str>>())
    };
    let agent_arg = ["--agent-bin", s(&agent)];

    let err = args(&input, &[&agent_arg[..], &["--force"][..]].concat()).expect_err("in place");
    assert!(err.contains("is the input image"), "{err}");
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&input, &link).expect("symlink");
    assert!(args(&link, &[&agent_arg[..], &["--force"][..]].concat())
        .expect_err("via link")
        .contains("is the input image"));

    let existing = dir.path().join("existing.img");
    std::fs::write(&existing, b"keep me").expect("write");
    let err = args(&existing, &agent_arg).expect_err("exists");
    assert!(
        err.ends_with("existing.img already exists: pass --force to overwrite it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&existing).expect("read"), b"keep me");
    args(&existing, &[&agent_arg[..], &["--force"][..]].concat()).expect("--force overwrites");
    assert_eq!(root_file(&existing, "/etc/hostname"), b"pi-01\n");

    let out = dir.path().join("out.img");
    let err = args(&out, &["--agent-bin", s(&x86)]).expect_err("x86 agent");
    assert!(
        err.contains("is for x86_64, but the image needs aarch64"),
        "{err}"
    );
    let err = args(&out, &["--agent-bin", s(&dir.path().join("nope"))]).expect_err("no agent");
    assert!(
        err.contains("no agent binary for aarch64 at") && err.contains("cross/build aarch64"),
        "{err}"
    );
    let err = args(
        &out,
        &[&agent_arg[..], &["--hostname", "Bad_Host"][..]].concat(),
    )
    .expect_err("hostname");
    assert!(err.contains("invalid host name \"Bad_Host\""), "{err}");
    let err = build(&[
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--master",
        "tcp://x:1",
        "--node",
        "a",
        "--token",
        "t",
    ])
    .expect_err("master");
    assert!(
        err.contains("invalid --master \"tcp://x:1\": the scheme must be mqtt:// or mqtts://"),
        "{err}"
    );
    let err = build(&[
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--master",
        "mqtts://x:8883",
        "--node",
        "a",
        "--token",
        "t",
    ])
    .expect_err("mqtts");
    assert!(
        err.contains("mqtts:// (MQTT over TLS) is not supported by this release"),
        "{err}"
    );
    let err = build(&[
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--master",
        MASTER,
        "--node",
        "a",
    ])
    .expect_err("no token");
    assert!(err.contains("--token"), "{err}");
    assert!(!out.exists());
    assert_eq!(sha256(&input), before);
}

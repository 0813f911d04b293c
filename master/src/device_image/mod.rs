//! `bramble device-image build`: turn a stock Raspberry Pi OS (or another
//! Raspberry Pi-style Debian/Ubuntu) disk image into one that boots straight
//! into a joined bramble node.
//!
//! The builder copies the input image (which it never modifies) and edits the
//! copy without mounting anything, so it needs no root:
//!
//! - the MBR partition table is parsed here ([`disk`]);
//! - the ext2/3/4 root partition is edited with e2fsprogs' `debugfs`, which
//!   opens a partition at a byte offset (`IMAGE?offset=N`);
//! - the FAT boot partition is edited with mtools (`-i IMAGE@@N`).
//!
//! Into the root file system it writes the agent binary for the image's
//! architecture (`/usr/local/bin/bramble-agent`), the agent's systemd unit
//! (enabled through the `multi-user.target.wants` symlink, as `systemctl
//! enable` would), `/etc/bramble/agent.toml` with the master address, node
//! name and join token (and the CA if given), and the host name in
//! `/etc/hostname` and `/etc/hosts`. In the boot partition it adds
//! `cgroup_enable=memory cgroup_memory=1` to `cmdline.txt`, which Raspberry Pi
//! kernels need for the memory cgroup.
//!
//! In fleet mode (`--fleet FILE --output-dir DIR`) it writes one image per
//! `NAME TOKEN` line of FILE, as `DIR/NAME.img`.

pub mod content;
pub mod disk;
mod tools;

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use self::disk::{ElfMachine, Partition};
use self::tools::{ExtFs, FatFs, Scratch};

/// The agent unit installed into images (the same file as `systemd/`).
pub const AGENT_UNIT: &str = include_str!("../../../systemd/bramble-agent.service");
/// Where the agent binary goes in the image.
pub const AGENT_BIN_PATH: &str = "/usr/local/bin/bramble-agent";
/// Where the agent unit goes in the image.
pub const AGENT_UNIT_PATH: &str = "/etc/systemd/system/bramble-agent.service";
/// The symlink that enables the unit.
pub const AGENT_WANTS_PATH: &str =
    "/etc/systemd/system/multi-user.target.wants/bramble-agent.service";
/// Where the agent's configuration goes in the image.
pub const AGENT_CONFIG_PATH: &str = "/etc/bramble/agent.toml";

/// Commands of `bramble device-image`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeviceImageCommand {
    /// Write a flashable image for one device (or one per device of a fleet).
    Build(DeviceImageArgs),
}

/// Arguments of `bramble device-image build`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeviceImageArgs {
    /// Stock disk image to start from (Raspberry Pi OS .img, decompressed); never modified.
    #[arg(long, value_name = "IMAGE")]
    pub input: PathBuf,
    /// Image to write (one device).
    #[arg(
        long,
        value_name = "IMAGE",
        required_unless_present = "fleet",
        conflicts_with = "fleet"
    )]
    pub output: Option<PathBuf>,
    /// MQTT address of the master the node joins, mqtt://HOST:PORT (this release speaks plain MQTT only).
    #[arg(long, value_name = "URL")]
    pub master: String,
    /// Node name (one device).
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "fleet",
        conflicts_with = "fleet"
    )]
    pub node: Option<String>,
    /// Join token from `bramble node add` (one device).
    #[arg(
        long,
        value_name = "TOKEN",
        required_unless_present = "fleet",
        conflicts_with = "fleet"
    )]
    pub token: Option<String>,
    /// Host name of the device [default: the node name].
    #[arg(long, value_name = "NAME", conflicts_with = "fleet")]
    pub hostname: Option<String>,
    /// Agent build to install [default: from the image: aarch64 for 64-bit ARM, armv6 for 32-bit ARM].
    #[arg(long, value_enum)]
    pub arch: Option<DeviceArch>,
    /// Agent binary to install [default: target/cross/ARCH/bramble-agent, built by cross/build].
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// CA certificate (PEM) for mqtts://, installed as /etc/bramble/ca.pem.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Fleet file: one `NAME TOKEN` per line (what `bramble node add --count N` prints).
    #[arg(long, value_name = "FILE", requires = "output_dir")]
    pub fleet: Option<PathBuf>,
    /// Directory for the fleet's images, written as DIR/NAME.img.
    #[arg(long, value_name = "DIR", requires = "fleet")]
    pub output_dir: Option<PathBuf>,
    /// Overwrite output images that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Which build of the agent a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArch {
    /// 64-bit ARM: Pi 3/4/5 and Zero 2 W on a 64-bit OS.
    Aarch64,
    /// 32-bit ARMv7: Pi 2/3 on a 32-bit OS.
    Armv7,
    /// 32-bit ARMv6: Pi Zero and Pi 1 (runs on every 32-bit Pi).
    Armv6,
    /// x86_64 PCs and VMs.
    #[value(name = "x86_64")]
    X86_64,
}

impl DeviceArch {
    /// The name used by `cross/build` and `target/cross/<name>/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aarch64 => "aarch64",
            Self::Armv7 => "armv7",
            Self::Armv6 => "armv6",
            Self::X86_64 => "x86_64",
        }
    }

    /// The ELF machine this build's binaries carry.
    fn machine(self) -> ElfMachine {
        match self {
            Self::Aarch64 => ElfMachine::Aarch64,
            Self::Armv7 | Self::Armv6 => ElfMachine::Arm,
            Self::X86_64 => ElfMachine::X86_64,
        }
    }

    /// The build to use for an image whose programs are for `machine`.
    fn for_machine(machine: ElfMachine) -> Option<Self> {
        match machine {
            ElfMachine::Aarch64 => Some(Self::Aarch64),
            // Raspberry Pi OS 32-bit runs on every Pi, Pi Zero and Pi 1
            // (ARMv6) included: the ARMv6 agent runs everywhere it does.
            ElfMachine::Arm => Some(Self::Armv6),
            ElfMachine::X86_64 => Some(Self::X86_64),
            ElfMachine::Other(_) => None,
        }
    }
}

impl fmt::Display for DeviceArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong building a device image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceImageError {
    /// The arguments do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A value is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// The value (never a token).
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A line of the fleet file is wrong.
    #[error("{path}:{line}: {reason}")]
    Fleet {
        /// The fleet file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The output is the input.
    #[error(
        "the output {0} is the input image: give another --output (the input is never modified)"
    )]
    OutputIsInput(PathBuf),
    /// The output exists and `--force` was not given.
    #[error("{0} already exists: pass --force to overwrite it")]
    OutputExists(PathBuf),
    /// The input is not an image the builder understands.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The input image.
        path: PathBuf,
        /// What it is not, and what to do.
        reason: String,
    },
    /// The agent binary to install is missing.
    #[error("no agent binary for {arch} at {path}: build it with `cross/build {arch}` or pass --agent-bin PATH")]
    AgentMissing {
        /// The wanted build.
        arch: DeviceArch,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The agent binary is for another CPU.
    #[error("the agent binary {path} is for {found}, but the image needs {arch}: pass the {arch} build with --agent-bin")]
    AgentWrongArch {
        /// The binary.
        path: PathBuf,
        /// What the binary is built for.
        found: String,
        /// What the image needs.
        arch: DeviceArch,
    },
    /// An external tool is not installed.
    #[error("`{tool}` is not installed: install it with `apt-get install {package}`")]
    ToolMissing {
        /// The program.
        tool: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// An external tool reported an error.
    #[error("{tool} failed: {detail}")]
    ToolFailed {
        /// The program.
        tool: &'static str,
        /// What it printed.
        detail: String,
    },
    /// Reading back what was written gave something else.
    #[error("verification of the written image failed: {0}")]
    Verify(String),
}

impl DeviceImageError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the builder did for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReport {
    /// The image written.
    pub output: PathBuf,
    /// The node it joins as.
    pub node: String,
    /// Its host name.
    pub hostname: String,
    /// The agent build installed.
    pub arch: DeviceArch,
    /// What the image's own programs are built for.
    pub image_machine: String,
    /// The root file system flavour (ext4, ...).
    pub root_fs: String,
    /// Files written into the root file system.
    pub files: Vec<String>,
    /// Kernel parameters added to `cmdline.txt` (empty if they were there).
    pub cmdline_added: Vec<String>,
}

/// What the builder did, image by image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// One entry per image written.
    pub images: Vec<ImageReport>,
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for image in &self.images {
            let cmdline = if image.cmdline_added.is_empty() {
                "cgroup flags already present".to_owned()
            } else {
                format!("added {}", image.cmdline_added.join(" "))
            };
            writeln!(
                f,
                "{}: node {} (hostname {}), {} agent; image: {}, {} root; cmdline.txt: {}",
                image.output.display(),
                image.node,
                image.hostname,
                image.arch,
                image.image_machine,
                image.root_fs,
                cmdline
            )?;
        }
        Ok(())
    }
}

/// One image to write.
#[derive(Debug, Clone)]
struct Job {
    output: PathBuf,
    node: String,
    token: String,
    hostname: String,
}

/// What the input image is made of.
#[derive(Debug, Clone)]
struct Layout {
    boot: Vec<Partition>,
    root: Partition,
    root_flavour: disk::ExtFlavour,
    /// What the image's programs are built for, if an ELF program was found.
    machine: Option<ElfMachine>,
}

/// Build the image(s) `args` asks for. Blocking (copies whole images and runs
/// external tools): call it from a plain thread or `spawn_blocking`.
pub fn run(args: &DeviceImageArgs) -> Result<BuildReport, DeviceImageError> {
    let master = bramble_common::endpoint::BrokerUrl::parse(&args.master).map_err(|reason| {
        DeviceImageError::Invalid {
            what: "--master",
            value: args.master.clone(),
            reason,
        }
    })?;
    if master.transport == bramble_common::endpoint::MqttTransport::Tls {
        // A flashed image whose agent refuses its own broker address never
        // joins: refuse it here, where the user can still change it.
        return Err(DeviceImageError::Invalid {
            what: "--master",
            value: args.master.clone(),
            reason: bramble_common::endpoint::TLS_NOT_YET.into(),
        });
    }
    let jobs = plan_jobs(args)?;
    let input = &args.input;
    for job in &jobs {
        check_output(input, &job.output, args.force)?;
    }
    let ca = match &args.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| DeviceImageError::io("read", path, e))?),
        None => None,
    };

    let layout = inspect(input)?;
    let arch = match args.arch {
        Some(arch) => arch,
        None => {
            let unsupported = |reason| DeviceImageError::Unsupported {
                path: input.clone(),
                reason,
            };
            let machine = layout.machine.ok_or_else(|| {
                unsupported(
                    "no ELF program found in /usr/bin or /bin to tell the architecture: pass --arch"
                        .into(),
                )
            })?;
            DeviceArch::for_machine(machine).ok_or_else(|| {
                unsupported(format!(
                    "its programs are for {machine}, which bramble has no agent for"
                ))
            })?
        }
    };
    let agent_bin = args.agent_bin.clone().unwrap_or_else(|| {
        PathBuf::from("target/cross")
            .join(arch.name())
            .join("bramble-agent")
    });
    let agent = read_agent(&agent_bin, arch)?;

    let mut report = BuildReport::default();
    for job in &jobs {
        let image = build_one(
            input,
            &layout,
            job,
            &args.master,
            arch,
            &agent,
            ca.as_deref(),
        )?;
        report.images.push(image);
    }
    Ok(report)
}

/// The images to write, validated before any is started.
fn plan_jobs(args: &DeviceImageArgs) -> Result<Vec<Job>, DeviceImageError> {
    let invalid = |what, value: &str, reason| DeviceImageError::Invalid {
        what,
        value: value.to_owned(),
        reason,
    };
    let jobs = match (&args.fleet, &args.output_dir) {
        (Some(fleet), Some(dir)) => {
            if args.output.is_some()
                || args.node.is_some()
                || args.token.is_some()
                || args.hostname.is_some()
            {
                return Err(DeviceImageError::Usage(
                    "--fleet takes node names and tokens from the file: drop --output, --node, --token and --hostname"
                        .into(),
                ));
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| DeviceImageError::io("create directory", dir, e))?;
            let text = std::fs::read_to_string(fleet)
                .map_err(|e| DeviceImageError::io("read", fleet, e))?;
            parse_fleet(fleet, &text)?
                .into_iter()
                .map(|(node, token)| Job {
                    output: dir.join(format!("{node}.img")),
                    hostname: node.clone(),
                    node,
                    token,
                })
                .collect()
        }
        (None, None) => {
            let (Some(output), Some(node), Some(token)) = (&args.output, &args.node, &args.token)
            else {
                return Err(DeviceImageError::Usage(
                    "give --output, --node and --token for one device, or --fleet FILE --output-dir DIR".into(),
                ));
            };
            bramble_common::endpoint::validate_node_name(node)
                .map_err(|r| invalid("--node", node, r))?;
            content::validate_token(token).map_err(|r| invalid("--token", "<redacted>", r))?;
            let hostname = args.hostname.clone().unwrap_or_else(|| node.clone());
            vec![Job {
                output: output.clone(),
                node: node.clone(),
                token: token.clone(),
                hostname,
            }]
        }
        _ => {
            return Err(DeviceImageError::Usage(
                "--fleet and --output-dir go together".into(),
            ))
        }
    };
    for job in &jobs {
        content::validate_hostname(&job.hostname)
            .map_err(|r| invalid("host name", &job.hostname, r))?;
    }
    Ok(jobs)
}

/// Parse a fleet file: `NAME TOKEN` per line; blank lines and lines starting
/// with `#` are ignored (a `#` inside a token is part of it).
fn parse_fleet(path: &Path, text: &str) -> Result<Vec<(String, String)>, DeviceImageError> {
    let mut nodes: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| DeviceImageError::Fleet {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [node, token] = fields.as_slice() else {
            return Err(err(format!(
                "expected `NAME TOKEN`, found {} fields",
                fields.len()
            )));
        };
        bramble_common::endpoint::validate_node_name(node)
            .map_err(|r| err(format!("node {node:?}: {r}")))?;
        content::validate_token(token).map_err(|r| err(format!("token of {node}: {r}")))?;
        if nodes.iter().any(|(n, _)| n == node) {
            return Err(err(format!("node {node} appears twice")));
        }
        nodes.push(((*node).to_owned(), (*token).to_owned()));
    }
    if nodes.is_empty() {
        return Err(DeviceImageError::Usage(format!(
            "{}: no nodes: write one `NAME TOKEN` line per device (`bramble node add --count N` prints them)",
            path.display()
        )));
    }
    Ok(nodes)
}

/// Refuse to write over the input, or over an existing file without `--force`.
fn check_output(input: &Path, output: &Path, force: bool) -> Result<(), DeviceImageError> {
    let input_meta =
        std::fs::metadata(input).map_err(|e| DeviceImageError::io("read", input, e))?;
    if !input_meta.is_file() {
        return Err(DeviceImageError::Unsupported {
            path: input.to_path_buf(),
            reason: "not a regular file: give a disk image file (to use a card or device, copy it to a file first)"
                .into(),
        });
    }
    if same_file(input, output) {
        return Err(DeviceImageError::OutputIsInput(output.to_path_buf()));
    }
    match std::fs::metadata(output) {
        Ok(meta) => {
            if !force {
                return Err(DeviceImageError::OutputExists(output.to_path_buf()));
            }
            if !meta.is_file() {
                return Err(DeviceImageError::Usage(format!(
                    "{} exists and is not a regular file: refusing to overwrite it",
                    output.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DeviceImageError::io("inspect", output, e)),
    }
    Ok(())
}

fn read_at(
    file: &mut File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, DeviceImageError> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| DeviceImageError::io("read", path, e))?;
    Ok(buf)
}

/// Read the input (read-only): partition table, file systems, architecture.
fn inspect(input: &Path) -> Result<Layout, DeviceImageError> {
    let unsupported = |reason: String| DeviceImageError::Unsupported {
        path: input.to_path_buf(),
        reason,
    };
    let mut file = File::open(input).map_err(|e| DeviceImageError::io("open", input, e))?;
    let len = file
        .metadata()
        .map_err(|e| DeviceImageError::io("inspect", input, e))?
        .len();
    let mbr = read_at(&mut file, input, 0, len.min(disk::SECTOR) as usize)?;
    let partitions = disk::parse_mbr(&mbr, len).map_err(unsupported)?;

    let mut boot = Vec::new();
    for p in partitions.iter().filter(|p| p.is_fat()) {
        if disk::looks_like_fat(&read_at(&mut file, input, p.offset, disk::SECTOR as usize)?) {
            boot.push(*p);
        }
    }
    if boot.is_empty() {
        return Err(unsupported(
            "no FAT boot partition: only Raspberry Pi-style images (FAT boot partition with cmdline.txt) are supported"
                .into(),
        ));
    }

    let mut root = None;
    let mut reasons = Vec::new();
    for p in partitions.iter().filter(|p| p.is_linux()) {
        let sb = read_at(
            &mut file,
            input,
            p.offset + disk::EXT_SUPERBLOCK_OFFSET,
            disk::EXT_SUPERBLOCK_LEN,
        )?;
        match disk::parse_ext_superblock(&sb) {
            Ok(info) if info.size > p.len => reasons.push(format!(
                "partition {}: the file system ({} bytes) is larger than its partition ({} bytes)",
                p.number, info.size, p.len
            )),
            Ok(info) => {
                root = Some((*p, info.flavour));
                break;
            }
            Err(reason) => reasons.push(format!("partition {}: {reason}", p.number)),
        }
    }
    let Some((root, root_flavour)) = root else {
        let why = if reasons.is_empty() {
            "there is no Linux (type 83) partition".to_owned()
        } else {
            reasons.join("; ")
        };
        return Err(unsupported(format!("no ext4 root partition ({why})")));
    };
    drop(file);

    // The root's own programs say what CPU the image is for. debugfs opens
    // the input read-only here.
    let scratch = Scratch::new(&std::env::temp_dir(), input)?;
    let fs = ExtFs::new(&scratch, root.offset);
    if fs.stat("/etc")?.is_none() {
        return Err(unsupported(format!(
            "partition {} has no /etc: it is not a root file system",
            root.number
        )));
    }
    let mut machine = None;
    for candidate in [
        "/usr/bin/dash",
        "/usr/bin/sh",
        "/bin/sh",
        "/usr/bin/ls",
        "/bin/ls",
        "/usr/bin/bash",
        "/bin/busybox",
    ] {
        if let Some(bytes) = fs.read(candidate)? {
            if let Some(m) = disk::elf_machine(&bytes) {
                machine = Some(m);
                break;
            }
        }
    }
    Ok(Layout {
        boot,
        root,
        root_flavour,
        machine,
    })
}

/// Read the agent binary and check it is for `arch`.
fn read_agent(path: &Path, arch: DeviceArch) -> Result<Vec<u8>, DeviceImageError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DeviceImageError::AgentMissing {
                arch,
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(DeviceImageError::io("read", path, e)),
    };
    match disk::elf_machine(&bytes) {
        Some(m) if m == arch.machine() => Ok(bytes),
        Some(m) => Err(DeviceImageError::AgentWrongArch {
            path: path.to_path_buf(),
            found: m.to_string(),
            arch,
        }),
        None => Err(DeviceImageError::AgentWrongArch {
            path: path.to_path_buf(),
            found: "not an ELF executable".into(),
            arch,
        }),
    }
}

/// Copy the input to `OUTPUT.partial`, edit it, and rename it into place.
fn build_one(
    input: &Path,
    layout: &Layout,
    job: &Job,
    master: &str,
    arch: DeviceArch,
    agent: &[u8],
    ca: Option<&[u8]>,
) -> Result<ImageReport, DeviceImageError> {
    let parent = match job.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut partial_name = job.output.file_name().unwrap_or_default().to_os_string();
    partial_name.push(".partial");
    let partial = parent.join(partial_name);
    if same_file(input, &partial) {
        return Err(DeviceImageError::OutputIsInput(partial));
    }
    std::fs::copy(input, &partial)
        .map_err(|e| DeviceImageError::io("copy the input to", &partial, e))?;
    let result = edit(layout, job, master, agent, ca, &parent, &partial);
    let edited = match result {
        Ok(edited) => edited,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| DeviceImageError::io("sync", &partial, e))?;
    std::fs::rename(&partial, &job.output)
        .map_err(|e| DeviceImageError::io("rename into", &job.output, e))?;
    Ok(ImageReport {
        output: job.output.clone(),
        node: job.node.clone(),
        hostname: job.hostname.clone(),
        arch,
        image_machine: layout
            .machine
            .map_or_else(|| "unknown CPU".to_owned(), |m| m.to_string()),
        root_fs: layout.root_flavour.to_string(),
        files: edited.files,
        cmdline_added: edited.cmdline_added,
    })
}

struct Edited {
    files: Vec<String>,
    cmdline_added: Vec<String>,
}

/// A file to place in the root file system.
struct RootFile {
    path: &'static str,
    mode: u32,
    bytes: Vec<u8>,
}

fn edit(
    layout: &Layout,
    job: &Job,
    master: &str,
    agent: &[u8],
    ca: Option<&[u8]>,
    parent: &Path,
    image: &Path,
) -> Result<Edited, DeviceImageError> {
    let scratch = Scratch::new(parent, image)?;

    // Boot partition: the first FAT partition holding cmdline.txt.
    let mut cmdline = None;
    for p in &layout.boot {
        let fat = FatFs::new(&scratch, p.offset);
        if let Some(text) = fat.read("cmdline.txt")? {
            cmdline = Some((fat, text));
            break;
        }
    }
    let Some((fat, text)) = cmdline else {
        return Err(DeviceImageError::Unsupported {
            path: image.to_path_buf(),
            reason: "no cmdline.txt in the FAT boot partition: only Raspberry Pi-style images are supported".into(),
        });
    };
    let text = String::from_utf8(text).map_err(|_| DeviceImageError::Unsupported {
        path: image.to_path_buf(),
        reason: "cmdline.txt is not text".into(),
    })?;
    let edit =
        content::cmdline_with_cgroups(&text).map_err(|reason| DeviceImageError::Unsupported {
            path: image.to_path_buf(),
            reason,
        })?;
    if edit.changed() {
        fat.write("cmdline.txt", edit.text.as_bytes())?;
        let back = fat.read("cmdline.txt")?;
        if back.as_deref() != Some(edit.text.as_bytes()) {
            return Err(DeviceImageError::Verify(
                "cmdline.txt does not read back as written".into(),
            ));
        }
    }

    // Root file system.
    let fs = ExtFs::new(&scratch, layout.root.offset);
    let hosts = fs.read("/etc/hosts")?.unwrap_or_default();
    let hosts = content::hosts_with_hostname(&String::from_utf8_lossy(&hosts), &job.hostname);
    let mut files = vec![
        RootFile {
            path: AGENT_BIN_PATH,
            mode: 0o755,
            bytes: agent.to_vec(),
        },
        RootFile {
            path: AGENT_UNIT_PATH,
            mode: 0o644,
            bytes: AGENT_UNIT.as_bytes().to_vec(),
        },
        RootFile {
            path: AGENT_CONFIG_PATH,
            mode: 0o600,
            bytes: content::agent_toml(master, &job.node, &job.token, ca.is_some()).into_bytes(),
        },
        RootFile {
            path: "/etc/hostname",
            mode: 0o644,
            bytes: format!("{}\n", job.hostname).into_bytes(),
        },
        RootFile {
            path: "/etc/hosts",
            mode: 0o644,
            bytes: hosts.into_bytes(),
        },
    ];
    if let Some(ca) = ca {
        files.push(RootFile {
            path: content::CA_PATH,
            mode: 0o644,
            bytes: ca.to_vec(),
        });
    }
    let dirs = [
        "/usr",
        "/usr/local",
        "/usr/local/bin",
        "/etc/bramble",
        "/etc/systemd",
        "/etc/systemd/system",
        "/etc/systemd/system/multi-user.target.wants",
    ];

    // debugfs' `mkdir` of an existing directory leaks an inode (e2fsprogs
    // 1.47.0), and its errors never change its exit status: look first, then
    // run only commands that must succeed.
    let mut commands = Vec::new();
    for dir in dirs {
        match fs.stat(dir)? {
            None => commands.push(format!("mkdir \"{dir}\"")),
            Some(stat) if stat.contains("Type: directory") => {}
            Some(_) => return Err(not_a_directory(image, dir)),
        }
    }
    for path in files.iter().map(|f| f.path).chain([AGENT_WANTS_PATH]) {
        match fs.stat(path)? {
            None => {}
            Some(stat) if stat.contains("Type: directory") => {
                return Err(DeviceImageError::Unsupported {
                    path: image.to_path_buf(),
                    reason: format!("{path} is a directory in the root file system: remove it from the image first"),
                })
            }
            Some(_) => commands.push(format!("rm \"{path}\"")),
        }
    }
    // Write files, owner root, exact modes; enable the unit.
    commands.extend([
        "set_inode_field /etc/bramble mode 040755".to_owned(),
        "set_inode_field /etc/bramble uid 0".to_owned(),
        "set_inode_field /etc/bramble gid 0".to_owned(),
    ]);
    for (i, file) in files.iter().enumerate() {
        let local = scratch.put(&format!("file-{i}"), &file.bytes)?;
        commands.push(format!("write {local} \"{}\"", file.path));
        commands.push(format!(
            "set_inode_field \"{}\" mode 0100{:03o}",
            file.path, file.mode
        ));
        commands.push(format!("set_inode_field \"{}\" uid 0", file.path));
        commands.push(format!("set_inode_field \"{}\" gid 0", file.path));
    }
    commands.push(format!(
        "symlink \"{AGENT_WANTS_PATH}\" \"{AGENT_UNIT_PATH}\""
    ));
    fs.script(&commands)?;

    // Read everything back.
    for file in &files {
        if fs.read(file.path)?.as_deref() != Some(&file.bytes[..]) {
            return Err(DeviceImageError::Verify(format!(
                "{} does not read back as written",
                file.path
            )));
        }
    }
    let link = fs.stat(AGENT_WANTS_PATH)?.unwrap_or_default();
    if !link.contains(&format!("Fast link dest: \"{AGENT_UNIT_PATH}\"")) {
        return Err(DeviceImageError::Verify(format!(
            "{AGENT_WANTS_PATH} is not a symlink to {AGENT_UNIT_PATH}"
        )));
    }
    Ok(Edited {
        files: files.iter().map(|f| f.path.to_owned()).collect(),
        cmdline_added: edit.added,
    })
}

fn not_a_directory(image: &Path, dir: &str) -> DeviceImageError {
    DeviceImageError::Unsupported {
        path: image.to_path_buf(),
        reason: format!("{dir} exists in the root file system but is not a directory"),
    }
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

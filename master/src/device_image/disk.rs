//! What a disk image looks like from the outside: the MBR partition table, the
//! FAT and ext2/3/4 superblocks, and ELF headers. Pure parsing, no I/O.

use std::fmt;

/// Size of a (logical) sector in a disk image. MBR images always use 512.
pub const SECTOR: u64 = 512;

/// One primary partition of an MBR partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based slot in the table (`p1`..`p4`).
    pub number: u8,
    /// The MBR partition type byte (0x0c FAT32 LBA, 0x83 Linux, ...).
    pub kind: u8,
    /// First byte of the partition in the image.
    pub offset: u64,
    /// Length of the partition in bytes.
    pub len: u64,
}

impl Partition {
    /// Whether the type byte is one of the FAT types.
    pub fn is_fat(&self) -> bool {
        matches!(self.kind, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e)
    }

    /// Whether the type byte is "Linux native".
    pub fn is_linux(&self) -> bool {
        self.kind == 0x83
    }
}

/// Read the partition table of a disk image from its first sector.
///
/// `image_len` is the size of the image, to catch truncated downloads. The
/// error text says what the image looks like instead and what to do.
pub fn parse_mbr(first_sector: &[u8], image_len: u64) -> Result<Vec<Partition>, String> {
    if let Some(kind) = compressed_kind(first_sector) {
        return Err(format!(
            "the input is a {kind} archive, not a disk image: decompress it first (e.g. `xz -dk IMAGE.img.xz`, `unzip IMAGE.zip`)"
        ));
    }
    if first_sector.len() < SECTOR as usize || first_sector.get(510..512) != Some(&[0x55, 0xaa][..])
    {
        return Err(
            "no MBR partition table (the boot signature 55 AA is missing): give a whole-disk image such as a Raspberry Pi OS .img"
                .into(),
        );
    }
    let mut partitions = Vec::new();
    for number in 1..=4u8 {
        let at = 446 + 16 * usize::from(number - 1);
        let entry = first_sector.get(at..at + 16).ok_or("short MBR")?;
        let status = entry[0];
        let kind = entry[4];
        let start = u64::from(u32::from_le_bytes([
            entry[8], entry[9], entry[10], entry[11],
        ]));
        let sectors = u64::from(u32::from_le_bytes([
            entry[12], entry[13], entry[14], entry[15],
        ]));
        if kind == 0xee {
            return Err(
                "GPT images are not supported yet: use an image with an MBR (DOS) partition table, as Raspberry Pi OS ships"
                    .into(),
            );
        }
        if status != 0x00 && status != 0x80 {
            return Err(format!(
                "sector 0 has a boot signature but partition entry {number} is not valid (status byte {status:#04x}): this looks like a bare file system, not a partitioned disk image"
            ));
        }
        if kind == 0 || sectors == 0 {
            continue;
        }
        let partition = Partition {
            number,
            kind,
            offset: start * SECTOR,
            len: sectors * SECTOR,
        };
        if partition.offset + partition.len > image_len {
            return Err(format!(
                "partition {number} ends at byte {} but the image has only {image_len} bytes: the image is truncated (download it again)",
                partition.offset + partition.len
            ));
        }
        partitions.push(partition);
    }
    if partitions.is_empty() {
        return Err(
            "the MBR partition table is empty: give a disk image with a boot and a root partition"
                .into(),
        );
    }
    Ok(partitions)
}

fn compressed_kind(head: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 5] = [
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x1f\x8b", "gzip"),
        (b"PK\x03\x04", "zip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"BZh", "bzip2"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, kind)| *kind)
}

/// Whether the first sector of a partition looks like a FAT boot sector.
pub fn looks_like_fat(boot_sector: &[u8]) -> bool {
    boot_sector.get(510..512) == Some(&[0x55, 0xaa][..])
        && (boot_sector.get(0x36..0x39) == Some(&b"FAT"[..])
            || boot_sector.get(0x52..0x57) == Some(&b"FAT32"[..]))
}

/// Offset of the ext2/3/4 superblock from the start of its partition.
pub const EXT_SUPERBLOCK_OFFSET: u64 = 1024;
/// Bytes of the superblock [`parse_ext_superblock`] needs.
pub const EXT_SUPERBLOCK_LEN: usize = 1024;

/// The facts about an ext2/3/4 file system the builder cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtInfo {
    /// Size of the file system in bytes.
    pub size: u64,
    /// ext4 (extents), ext3 (journal) or ext2.
    pub flavour: ExtFlavour,
}

/// Which generation of the ext file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtFlavour {
    /// ext2: no journal.
    Ext2,
    /// ext3: journal, no extents.
    Ext3,
    /// ext4: extents.
    Ext4,
}

impl fmt::Display for ExtFlavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ext2 => "ext2",
            Self::Ext3 => "ext3",
            Self::Ext4 => "ext4",
        })
    }
}

/// Parse the superblock found [`EXT_SUPERBLOCK_OFFSET`] bytes into a partition.
pub fn parse_ext_superblock(sb: &[u8]) -> Result<ExtInfo, String> {
    let u16_at = |at: usize| sb.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| {
        sb.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u16_at(0x38) != Some(0xef53) {
        return Err("not an ext2/3/4 file system".into());
    }
    let short = || "the ext superblock is truncated".to_owned();
    let log_block = u32_at(0x18).ok_or_else(short)?;
    if log_block > 6 {
        return Err(format!(
            "the ext superblock has an impossible block size (log {log_block})"
        ));
    }
    let block_size = 1024u64 << log_block;
    let compat = u32_at(0x5c).ok_or_else(short)?;
    let incompat = u32_at(0x60).ok_or_else(short)?;
    let mut blocks = u64::from(u32_at(0x04).ok_or_else(short)?);
    const INCOMPAT_RECOVER: u32 = 0x0004;
    const INCOMPAT_EXTENTS: u32 = 0x0040;
    const INCOMPAT_64BIT: u32 = 0x0080;
    const COMPAT_HAS_JOURNAL: u32 = 0x0004;
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(0x150).ok_or_else(short)?) << 32;
    }
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(
            "the root file system needs journal recovery (it was copied from a running system): run `e2fsck` on it, or start from a freshly downloaded image"
                .into(),
        );
    }
    let flavour = if incompat & INCOMPAT_EXTENTS != 0 {
        ExtFlavour::Ext4
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        ExtFlavour::Ext3
    } else {
        ExtFlavour::Ext2
    };
    Ok(ExtInfo {
        size: blocks * block_size,
        flavour,
    })
}

/// The CPU an ELF file is built for, as far as picking an agent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfMachine {
    /// EM_AARCH64, 64-bit.
    Aarch64,
    /// EM_ARM, 32-bit.
    Arm,
    /// EM_X86_64, 64-bit.
    X86_64,
    /// Anything else (the raw `e_machine`).
    Other(u16),
}

impl fmt::Display for ElfMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aarch64 => f.write_str("64-bit ARM (aarch64)"),
            Self::Arm => f.write_str("32-bit ARM"),
            Self::X86_64 => f.write_str("x86_64"),
            Self::Other(m) => write!(f, "ELF machine {m}"),
        }
    }
}

/// The machine of an ELF file from its first bytes, `None` if it is not ELF.
pub fn elf_machine(head: &[u8]) -> Option<ElfMachine> {
    if !head.starts_with(b"\x7fELF") {
        return None;
    }
    let little_endian = *head.get(5)? == 1;
    let raw = head.get(18..20)?;
    let machine = if little_endian {
        u16::from_le_bytes([raw[0], raw[1]])
    } else {
        u16::from_be_bytes([raw[0], raw[1]])
    };
    Some(match (machine, head.get(4)) {
        (183, Some(2)) => ElfMachine::Aarch64,
        (40, Some(1)) => ElfMachine::Arm,
        (62, Some(2)) => ElfMachine::X86_64,
        (other, _) => ElfMachine::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr(entries: &[(u8, u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        for (i, (status, kind, start, len)) in entries.iter().enumerate() {
            let at = 446 + 16 * i;
            s[at] = *status;
            s[at + 4] = *kind;
            s[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
            s[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    #[test]
    fn raspberry_pi_os_layout() {
        let parts = parse_mbr(
            &mbr(&[(0, 0x0c, 8192, 1024), (0, 0x83, 9216, 4096)]),
            14000 * 512,
        )
        .expect("valid");
        assert_eq!(parts.len(), 2);
        assert!(parts[0].is_fat() && parts[0].offset == 8192 * 512 && parts[0].len == 1024 * 512);
        assert!(parts[1].is_linux() && parts[1].number == 2);
    }

    #[test]
    fn refusals() {
        let gpt = parse_mbr(&mbr(&[(0, 0xee, 1, 100)]), 1 << 20).expect_err("gpt");
        assert!(gpt.starts_with("GPT images are not supported yet"), "{gpt}");
        let none = parse_mbr(&[0u8; 512], 1 << 20).expect_err("no mbr");
        assert!(none.contains("no MBR partition table"), "{none}");
        let xz = parse_mbr(b"\xfd7zXZ\x00rest", 1 << 20).expect_err("xz");
        assert!(xz.contains("xz archive"), "{xz}");
        let short = parse_mbr(&mbr(&[(0, 0x83, 2048, 4096)]), 4096 * 512).expect_err("truncated");
        assert!(short.contains("truncated"), "{short}");
        let bare = parse_mbr(&mbr(&[(0x12, 0x83, 2048, 4096)]), 1 << 30).expect_err("bad status");
        assert!(bare.contains("bare file system"), "{bare}");
        assert!(parse_mbr(&mbr(&[]), 1 << 20).is_err());
    }

    #[test]
    fn ext_superblock() {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&1000u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&0x40u32.to_le_bytes());
        assert_eq!(
            parse_ext_superblock(&sb),
            Ok(ExtInfo {
                size: 4096 * 1000,
                flavour: ExtFlavour::Ext4
            })
        );
        sb[0x60..0x64].copy_from_slice(&0x44u32.to_le_bytes());
        assert!(parse_ext_superblock(&sb).is_err_and(|e| e.contains("journal recovery")));
        assert!(parse_ext_superblock(&[0u8; 1024]).is_err());
    }

    #[test]
    fn elf_headers() {
        let mut h = b"\x7fELF\x02\x01\x01".to_vec();
        h.resize(20, 0);
        h[18] = 183;
        assert_eq!(elf_machine(&h), Some(ElfMachine::Aarch64));
        h[4] = 1;
        h[18] = 40;
        assert_eq!(elf_machine(&h), Some(ElfMachine::Arm));
        assert_eq!(elf_machine(b"#!/bin/sh\n"), None);
    }
}

//! Platforms (`os/architecture[/variant]`) the way containerd's `platforms`
//! package handles them: normalisation (`aarch64` is `arm64`, `arm` without
//! a variant is `arm/v7`, `arm64/v8` is `arm64`), the node's own platform
//! with the ARM variant read from `/proc/cpuinfo` (Raspberry Pi ARMv6 boards
//! report "CPU architecture: 7" but an `ARMv6-compatible` model name), and
//! the ordered fallbacks a node can run (`arm/v7` then `v6`, `v5`; `arm64`
//! then `arm/v8`, `v7`, ...; `amd64` then `386`).

use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH name: `amd64`, `arm64`, `arm`, `386`.
    pub architecture: String,
    /// `v6`, `v7`, `v8`; empty when none.
    pub variant: String,
}

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.to_string(),
        }
        .normalized()
    }

    /// Parses `os/arch[/variant]` (or `arch[/variant]`, meaning linux).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let bad =
            || format!("invalid platform {s:?}: want os/architecture[/variant], e.g. linux/arm/v6");
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !parts.iter().all(|p| valid(p)) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch, variant] => Ok(Platform::new(os, arch, variant)),
            [os, arch] if *os == "linux" || *os == "windows" || *os == "darwin" => {
                Ok(Platform::new(os, arch, ""))
            }
            [arch, variant] => Ok(Platform::new("linux", arch, variant)),
            [arch] => Ok(Platform::new("linux", arch, "")),
            _ => Err(bad()),
        }
    }

    /// containerd's `platforms.Normalize`.
    pub fn normalized(&self) -> Platform {
        let os = self.os.to_ascii_lowercase();
        let os = if os == "macos" { "darwin".into() } else { os };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.to_ascii_lowercase();
        let (arch, variant) = match (arch.as_str(), variant.as_str()) {
            ("i386", _) => ("386".to_string(), String::new()),
            ("x86_64" | "x86-64" | "amd64", v) => (
                "amd64".to_string(),
                if v == "v1" {
                    String::new()
                } else {
                    v.to_string()
                },
            ),
            ("aarch64" | "arm64", v) => (
                "arm64".to_string(),
                if v == "8" || v == "v8" {
                    String::new()
                } else {
                    v.to_string()
                },
            ),
            ("armhf", _) => ("arm".to_string(), "v7".to_string()),
            ("armel", _) => ("arm".to_string(), "v6".to_string()),
            ("arm", v) => (
                "arm".to_string(),
                match v {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{v}"),
                    other => other.to_string(),
                },
            ),
            (a, v) => (a.to_string(), v.to_string()),
        };
        Platform {
            os,
            architecture: arch,
            variant,
        }
    }

    /// The platforms a node of this platform runs, best first
    /// (containerd's `platforms.Only`).
    pub fn fallbacks(&self) -> Vec<Platform> {
        let p = self.normalized();
        let mut out = vec![p.clone()];
        match p.architecture.as_str() {
            "amd64" => {
                if let Some(mut v) = version_of(&p.variant).filter(|v| *v > 1) {
                    v -= 1;
                    while v >= 1 {
                        out.push(Platform::new(&p.os, "amd64", &format!("v{v}")));
                        v -= 1;
                    }
                }
                out.push(Platform::new(&p.os, "386", ""));
            }
            "arm" => {
                if let Some(mut v) = version_of(&p.variant).filter(|v| *v > 5) {
                    v -= 1;
                    while v >= 5 {
                        out.push(Platform::new(&p.os, "arm", &format!("v{v}")));
                        v -= 1;
                    }
                }
            }
            "arm64" => {
                let variant = if p.variant.is_empty() {
                    "v8".to_string()
                } else {
                    p.variant.clone()
                };
                out.extend(Platform::new(&p.os, "arm", &variant).fallbacks());
            }
            _ => {}
        }
        out
    }

    /// Whether `other` is the same platform once both are normalised.
    pub fn same(&self, other: &Platform) -> bool {
        self.normalized() == other.normalized()
    }

    /// The node's own platform: the architecture this agent was built
    /// for, with the ARM variant of the CPU it runs on.
    pub fn host() -> Platform {
        let goarch = goarch(std::env::consts::ARCH);
        let variant = if goarch == "arm" || goarch == "arm64" {
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| cpu_variant(&c, goarch))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Platform::new("linux", goarch, &variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

fn version_of(variant: &str) -> Option<u32> {
    variant.strip_prefix('v')?.parse().ok()
}

/// The GOARCH name of a Rust `target_arch`.
pub fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The ARM variant (`v6`, `v7`, `v8`) from `/proc/cpuinfo` text, as
/// containerd's `cpuinfo` does it.
pub fn cpu_variant(cpuinfo: &str, goarch: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut variant = field("CPU architecture")?;
    if goarch == "arm" && variant == "7" {
        let model = field("model name").unwrap_or_default();
        if model.to_ascii_lowercase().starts_with("armv6-compatible") {
            variant = "6".into();
        }
    }
    let v = match variant.to_ascii_lowercase().as_str() {
        "8" | "aarch64" => "v8",
        "7" | "7m" | "?(12)" | "?(13)" | "?(14)" | "?(15)" | "?(16)" | "?(17)" => "v7",
        "6" | "6tej" => "v6",
        "5" | "5t" | "5te" | "5tej" => "v5",
        "4" | "4t" => "v4",
        "3" => "v3",
        _ => return None,
    };
    Some(v.to_string())
}

/// Picks, among the `offered` platforms (an index's manifests in order),
/// the one a node of platform `node` should run: the best in its
/// fallback order, the first of equals. `None` when none fits.
pub fn select(node: &Platform, offered: &[Platform]) -> Option<usize> {
    for want in node.fallbacks() {
        if let Some(i) = offered.iter().position(|o| o.same(&want)) {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).expect("platform")
    }

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("arm/v6").to_string(), "linux/arm/v6");
        assert!(Platform::parse("linux/../x").is_err());
        assert!(Platform::parse("").is_err());
    }

    #[test]
    fn armv6_never_takes_v7_and_arm64_falls_back() {
        let offered = vec![
            p("linux/amd64"),
            p("linux/arm/v7"),
            p("linux/arm/v6"),
            p("linux/arm64/v8"),
        ];
        assert_eq!(select(&p("linux/arm/v6"), &offered), Some(2));
        assert_eq!(select(&p("linux/arm/v7"), &offered), Some(1));
        assert_eq!(select(&p("linux/arm64"), &offered), Some(3));
        assert_eq!(select(&p("linux/amd64"), &offered), Some(0));
        // v7 falls back to v6, an arm64 node to 32-bit arm.
        assert_eq!(select(&p("linux/arm/v7"), &offered[2..3]), Some(0));
        assert_eq!(
            select(&p("linux/arm64"), &[p("linux/amd64"), p("linux/arm/v7")]),
            Some(1)
        );
        // Nothing for a v5 node in a v6/v7 list.
        assert_eq!(select(&p("linux/arm/v5"), &offered[1..3]), None);
    }

    #[test]
    fn reads_the_arm_variant_from_cpuinfo() {
        let pi_zero = "processor\t: 0\nmodel name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n";
        assert_eq!(cpu_variant(pi_zero, "arm").as_deref(), Some("v6"));
        let pi3 = "model name\t: ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\n";
        assert_eq!(cpu_variant(pi3, "arm").as_deref(), Some("v7"));
        let pi4_64 = "processor\t: 0\nCPU architecture: 8\n";
        assert_eq!(cpu_variant(pi4_64, "arm64").as_deref(), Some("v8"));
        assert_eq!(cpu_variant("nothing here", "arm"), None);
    }
}

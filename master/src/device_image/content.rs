//! The files the builder writes or edits, as text: the agent's config, the
//! kernel command line, `/etc/hostname` and `/etc/hosts`. Pure functions.

/// Kernel parameters that turn on the memory cgroup on Raspberry Pi kernels.
pub const CGROUP_PARAMS: [&str; 2] = ["cgroup_enable=memory", "cgroup_memory=1"];
/// A parameter some images carry that contradicts [`CGROUP_PARAMS`].
const CGROUP_DISABLE_MEMORY: &str = "cgroup_disable=memory";

/// Check a host name for `/etc/hostname`: at most 64 characters of DNS labels.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a host name has 1 to 64 characters".into());
    }
    if name.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(
            "use lowercase letters, digits and '-', starting and ending with a letter or digit"
                .into(),
        )
    }
}

fn is_dns_label(label: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    label.len() <= 63
        && edge(label.chars().next())
        && edge(label.chars().last())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Check a join token: non-empty, no whitespace or control characters.
pub fn validate_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the join token is empty: use the token `bramble node add` printed".into());
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the join token contains spaces or control characters: copy it again".into());
    }
    Ok(())
}

/// Where the agent's CA certificate goes when one is given.
pub const CA_PATH: &str = "/etc/bramble/ca.pem";

/// The `/etc/bramble/agent.toml` for one node (keys as `bramble-agent` reads them).
pub fn agent_toml(master: &str, node: &str, token: &str, with_ca: bool) -> String {
    let mut out = format!(
        "# Written by `bramble device-image build` for node {node}.\n\
         # Check it on the device with `bramble-agent check-config`.\n\
         master = {}\nnode = {}\ntoken = {}\n",
        toml_string(master),
        toml_string(node),
        toml_string(token),
    );
    if with_ca {
        out.push_str(&format!("ca-file = {}\n", toml_string(CA_PATH)));
    }
    out
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The result of editing `cmdline.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineEdit {
    /// The new file content (one line, newline-terminated).
    pub text: String,
    /// Parameters that were added.
    pub added: Vec<String>,
    /// Parameters that were removed (a contradicting `cgroup_disable=memory`).
    pub removed: Vec<String>,
}

impl CmdlineEdit {
    /// Whether the file needs rewriting.
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

/// Add the memory-cgroup parameters to a Raspberry Pi `cmdline.txt` (one
/// line) if they are missing; running it again changes nothing. Parameters go
/// before a `--` (what follows it is passed to init, not to the kernel).
pub fn cmdline_with_cgroups(text: &str) -> Result<CmdlineEdit, String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = match lines.as_slice() {
        [line] => *line,
        [] => return Err("cmdline.txt is empty: it must hold the kernel command line".into()),
        more => {
            return Err(format!(
                "cmdline.txt has {} lines but the firmware reads one: join them into a single line first",
                more.len()
            ))
        }
    };
    let mut params: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let mut removed = Vec::new();
    params.retain(|p| {
        let drop = p == CGROUP_DISABLE_MEMORY;
        if drop {
            removed.push(p.clone());
        }
        !drop
    });
    let end = params
        .iter()
        .position(|p| p == "--")
        .unwrap_or(params.len());
    let mut added = Vec::new();
    for wanted in CGROUP_PARAMS {
        if !params[..end].iter().any(|p| p == wanted) {
            added.push(wanted.to_owned());
        }
    }
    for (i, p) in added.iter().enumerate() {
        params.insert(end + i, p.clone());
    }
    let mut text = params.join(" ");
    text.push('\n');
    Ok(CmdlineEdit {
        text,
        added,
        removed,
    })
}

/// `/etc/hosts` with the `127.0.1.1` line naming `hostname` (Debian's
/// convention for the machine's own name), added if missing.
pub fn hosts_with_hostname(hosts: &str, hostname: &str) -> String {
    let wanted = format!("127.0.1.1\t{hostname}");
    let mut found = false;
    let mut out = String::with_capacity(hosts.len() + wanted.len() + 1);
    for line in hosts.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            if !found {
                out.push_str(&wanted);
                out.push('\n');
            }
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&wanted);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI_OS: &str = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

    #[test]
    fn cmdline_adds_once() {
        let first = cmdline_with_cgroups(PI_OS).expect("valid");
        assert!(first.changed());
        assert!(
            first
                .text
                .ends_with("firstboot cgroup_enable=memory cgroup_memory=1\n"),
            "{}",
            first.text
        );
        let second = cmdline_with_cgroups(&first.text).expect("valid");
        assert!(!second.changed());
        assert_eq!(second.text, first.text);
    }

    #[test]
    fn cmdline_edge_cases() {
        let e = cmdline_with_cgroups(
            "root=/dev/sda2 cgroup_disable=memory cgroup_memory=1 -- single\n",
        )
        .expect("ok");
        assert_eq!(
            e.text,
            "root=/dev/sda2 cgroup_memory=1 cgroup_enable=memory -- single\n"
        );
        assert_eq!(e.removed, vec!["cgroup_disable=memory".to_owned()]);
        assert!(cmdline_with_cgroups("a\nb\n").is_err_and(|e| e.contains("2 lines")));
        assert!(cmdline_with_cgroups("\n").is_err());
        let crlf = cmdline_with_cgroups("root=/dev/mmcblk0p2 rootwait\r\n").expect("crlf");
        assert_eq!(
            crlf.text,
            "root=/dev/mmcblk0p2 rootwait cgroup_enable=memory cgroup_memory=1\n"
        );
    }

    #[test]
    fn hosts() {
        let pi = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\t\traspberrypi\n";
        let out = hosts_with_hostname(pi, "pi-01");
        assert!(out.ends_with("\n127.0.1.1\tpi-01\n"), "{out}");
        assert!(out.starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(
            hosts_with_hostname("127.0.0.1 localhost", "n"),
            "127.0.0.1 localhost\n127.0.1.1\tn\n"
        );
        assert_eq!(hosts_with_hostname(&out, "pi-01"), out);
    }

    #[test]
    fn validation() {
        assert!(validate_hostname(&"a".repeat(65)).is_err());
        assert!(validate_token("abc.DEF_123").is_ok());
        assert!(validate_token("a b").is_err());
    }

    #[test]
    fn agent_config_text() {
        let t = agent_toml("mqtt://m:1883", "pi-01", "to\"ken", true);
        assert!(t.contains("master = \"mqtt://m:1883\"\nnode = \"pi-01\"\ntoken = \"to\\\"ken\"\nca-file = \"/etc/bramble/ca.pem\"\n"));
    }
}

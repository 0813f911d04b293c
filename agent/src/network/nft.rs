//! The agent's nftables table: egress masquerade and `hostPort` DNAT.
//!
//! The agent owns one table, `ip {name}` (by default `bramble-{node}`), and
//! only ever replaces it as a whole: the script [`render`] produces declares
//! the table (so it exists), deletes it and declares it again with every rule,
//! which `nft -f -` applies as one transaction. Rendering is pure and
//! unit-tested; [`apply`] feeds the script to `nft` in the calling thread's
//! network namespace. Services (ClusterIP, NodePort) will add their chains to
//! [`NftRules`] the same way.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use super::{HostPort, Protocol};

/// Errors of running `nft`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// `nft` could not be started.
    #[error("cannot run `{binary}` (install the nftables package): {source}")]
    Spawn {
        /// The binary run.
        binary: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `nft` refused the script.
    #[error("nft refused the ruleset for table {table}: {stderr}")]
    Failed {
        /// The table.
        table: String,
        /// What nft printed.
        stderr: String,
    },
}

/// A `hostPort` published on the node, forwarded to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The port as the pod spec gives it.
    pub port: HostPort,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
}

/// Everything the agent's table contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRules {
    /// Table name (family `ip`).
    pub table: String,
    /// The pod bridge.
    pub bridge: String,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The whole cluster's pod CIDR: traffic to it is never masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// Whether to masquerade pod traffic leaving the cluster.
    pub masquerade: bool,
    /// Published host ports.
    pub port_mappings: Vec<PortMapping>,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The `nft -f` script that atomically replaces the table with `rules`.
pub fn render(rules: &NftRules) -> String {
    let t = &rules.table;
    let mut s = format!("table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n");
    s.push_str(
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
    );
    if rules.masquerade {
        s.push_str(&format!(
            "\t\tip saddr {} ip daddr != {} masquerade\n",
            rules.pod_cidr.trunc(),
            rules.cluster_cidr.trunc()
        ));
    }
    // Hairpin: a pod reaching a hostPort of its own node is answered through
    // the node, not straight over the bridge.
    s.push_str(&format!(
        "\t\tiifname \"{b}\" oifname \"{b}\" ct status dnat masquerade\n",
        b = rules.bridge
    ));
    s.push_str("\t}\n");
    s.push_str(
        "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n",
    );
    for m in &rules.port_mappings {
        s.push_str(&format!("\t\t{}\n", dnat_rule(m)));
    }
    s.push_str("\t}\n");
    s.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n");
    for m in &rules.port_mappings {
        s.push_str(&format!("\t\tip daddr != 127.0.0.0/8 {}\n", dnat_rule(m)));
    }
    s.push_str("\t}\n}\n");
    s
}

fn dnat_rule(m: &PortMapping) -> String {
    let dst = match m.port.host_ip {
        Some(ip) if !ip.is_unspecified() => format!("ip daddr {ip}"),
        _ => "fib daddr type local".to_string(),
    };
    format!(
        "{dst} {p} dport {hp} dnat to {ip}:{cp}",
        p = proto(m.port.protocol),
        hp = m.port.host_port,
        ip = m.pod_ip,
        cp = m.port.container_port
    )
}

/// The script that removes the table if it exists.
pub fn render_delete(table: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n")
}

/// Runs `nft -f -` with `script` in the calling thread's network namespace.
pub fn apply(binary: &str, table: &str, script: &str) -> Result<(), NftError> {
    let mut child = Command::new(binary)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn {
            binary: binary.to_string(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as nft's failure below.
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NftError::Spawn {
        binary: binary.to_string(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed {
            table: table.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The current listing of the table (`nft list table ip NAME`), `None` if
/// it does not exist; runs in the calling thread's network namespace.
pub fn list_table(binary: &str, table: &str) -> Result<Option<String>, NftError> {
    let out = Command::new(binary)
        .args(["list", "table", "ip", table])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NftError::Spawn {
            binary: binary.to_string(),
            source,
        })?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Whether `name` is usable as an nft table name.
pub fn valid_table_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rules(ports: Vec<PortMapping>) -> NftRules {
        NftRules {
            table: "bramble-n1".into(),
            bridge: "bramble0".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            masquerade: true,
            port_mappings: ports,
        }
    }

    #[test]
    fn masquerade_and_replace_as_a_whole() {
        let s = render(&rules(vec![]));
        assert!(s.starts_with(
            "table ip bramble-n1\ndelete table ip bramble-n1\ntable ip bramble-n1 {\n"
        ));
        assert!(s.contains("ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 masquerade"));
        assert!(!s.contains("dnat to"));
    }

    #[test]
    fn host_ports_become_dnat_in_prerouting_and_output() {
        let s = render(&rules(vec![
            PortMapping {
                port: HostPort {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: None,
                },
                pod_ip: "10.244.1.5".parse().unwrap(),
            },
            PortMapping {
                port: HostPort {
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: Some("192.168.1.10".parse().unwrap()),
                },
                pod_ip: "10.244.1.6".parse().unwrap(),
            },
        ]));
        assert!(s.contains("\t\tfib daddr type local tcp dport 8080 dnat to 10.244.1.5:80\n"));
        assert!(s.contains(
            "\t\tip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat to 10.244.1.5:80\n"
        ));
        assert!(s.contains("ip daddr 192.168.1.10 udp dport 5353 dnat to 10.244.1.6:53"));
    }

    #[test]
    fn no_masquerade_when_disabled() {
        let mut r = rules(vec![]);
        r.masquerade = false;
        assert!(!render(&r).contains("ip saddr"));
    }

    #[test]
    fn table_names() {
        assert!(valid_table_name("bramble-node-1"));
        assert!(!valid_table_name("1bramble"));
        assert!(!valid_table_name("bramble;flush ruleset"));
        assert!(!valid_table_name(""));
    }
}

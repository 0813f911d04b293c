//! The agent's configuration: `/etc/bramble/agent.toml` plus command-line
//! overrides, validated once at start-up.
//!
//! The file uses the same kebab-case names as the flags:
//!
//! ```toml
//! master = "mqtt://192.168.1.10:1883"
//! node = "pi-01"
//! token = "..."
//! state-dir = "/var/lib/bramble/agent"   # optional
//! run-dir = "/run/bramble"               # optional
//! heartbeat-seconds = 10                 # optional
//! ca-file = "/etc/bramble/ca.pem"        # optional, for TLS (mqtts://)
//! cluster = "bramble"                     # optional, the cluster name in MQTT topics
//! node-address = "192.168.1.21"          # optional, default: the default route's interface address
//! network = true                         # optional, false: no pod network (pods get only `lo`)
//! bridge = "bramble0"                    # optional, the pod bridge (one per agent sharing a network namespace)
//! registries = "/etc/bramble/registries.yaml" # optional, k3s' registries.yaml: mirrors, auth, TLS
//! ```
//!
//! Flags override the file. An unknown key in the file is an error that names
//! the key, and malformed TOML is reported as `file:line:col: message`.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bramble_common::endpoint::{validate_node_name, TLS_NOT_YET};
pub use bramble_common::endpoint::{BrokerUrl, MqttTransport};
use serde::Deserialize;

use crate::images::registries::RegistriesConfig;
use crate::network::names::valid_ifname;
use crate::network::DEFAULT_BRIDGE;

/// Where the agent looks for its configuration when `--config` is not given.
/// A missing file at this path is not an error (flags may carry everything).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bramble/agent.toml";
/// Default directory for the agent's persistent state (desired state copy, images).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bramble/agent";
/// Default directory for runtime state (sockets, pod network namespaces).
pub const DEFAULT_RUN_DIR: &str = "/run/bramble";
/// Default interval between heartbeats to the master, in seconds.
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 10;
/// Largest accepted heartbeat interval (one hour): anything slower makes a
/// dead node look alive for too long.
pub const MAX_HEARTBEAT_SECONDS: u64 = 3600;
/// Where the agent looks for `registries.yaml` when `registries` is not
/// set (a missing file there is not an error).
pub const DEFAULT_REGISTRIES_PATH: &str = "/etc/bramble/registries.yaml";
/// Default cluster name: the second level of every MQTT topic.
pub const DEFAULT_CLUSTER: &str = "bramble";

/// Everything that can go wrong while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file named with `--config` does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A required setting is missing from both the file and the flags.
    #[error("`{key}` is not set: put `{key} = ...` in {path} or pass --{key}")]
    Missing {
        /// The kebab-case key.
        key: &'static str,
        /// The config file that was (or would have been) read.
        path: PathBuf,
    },
    /// A setting has a value the agent cannot use.
    #[error("invalid `{key}` {value:?}: {reason}")]
    Invalid {
        /// The kebab-case key.
        key: &'static str,
        /// The offending value (never the token).
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// The configuration file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AgentConfigFile {
    master: Option<String>,
    node: Option<String>,
    token: Option<String>,
    state_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    heartbeat_seconds: Option<u64>,
    ca_file: Option<PathBuf>,
    cluster: Option<String>,
    node_address: Option<String>,
    network: Option<bool>,
    bridge: Option<String>,
    registries: Option<PathBuf>,
}

/// Values given on the command line; each one that is set wins over the file.
#[derive(Debug, Default, Clone)]
pub struct ConfigOverrides {
    /// `--master`.
    pub master: Option<String>,
    /// `--node`.
    pub node: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--run-dir`.
    pub run_dir: Option<PathBuf>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// `--node-address`.
    pub node_address: Option<String>,
    /// `--no-network` (`Some(false)`).
    pub network: Option<bool>,
    /// `--bridge`.
    pub bridge: Option<String>,
    /// `--registries`.
    pub registries: Option<PathBuf>,
}

/// The validated, effective configuration of the agent.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The MQTT broker the master listens behind.
    pub master: BrokerUrl,
    /// This node's name: a DNS-1123 subdomain, unique in the cluster.
    pub node: String,
    /// The join token the master issued for this node (secret).
    pub token: String,
    /// Persistent state directory.
    pub state_dir: PathBuf,
    /// Runtime state directory (cleared at boot).
    pub run_dir: PathBuf,
    /// Seconds between heartbeats.
    pub heartbeat_seconds: u64,
    /// CA certificate for `mqtts://`, once TLS exists.
    pub ca_file: Option<PathBuf>,
    /// The file the configuration came from, if one was read.
    pub source: Option<PathBuf>,
    /// The cluster's name, as in the MQTT topics (`bramble/{cluster}/...`).
    pub cluster: String,
    /// The node's `InternalIP`; `None`: the address of the interface that
    /// holds the default route.
    pub node_address: Option<Ipv4Addr>,
    /// Whether pods get their own network (bridge, veth, pod CIDR address);
    /// off, pods without `hostNetwork` only have a loopback interface.
    pub network: bool,
    /// The pod bridge's name (default `bramble0`). Two agents sharing one
    /// network namespace need different bridges.
    pub bridge: String,
    /// The `registries.yaml` in use, if any (k3s format).
    pub registries_file: Option<PathBuf>,
    /// Its content (empty without a file).
    pub registries: RegistriesConfig,
}

/// `Debug` never shows the token.
impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("master", &self.master)
            .field("node", &self.node)
            .field("token", &"<redacted>")
            .field("state_dir", &self.state_dir)
            .field("run_dir", &self.run_dir)
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .field("ca_file", &self.ca_file)
            .field("source", &self.source)
            .field("cluster", &self.cluster)
            .field("node_address", &self.node_address)
            .field("network", &self.network)
            .field("bridge", &self.bridge)
            .field("registries_file", &self.registries_file)
            .finish()
    }
}

impl AgentConfig {
    /// Load the configuration.
    ///
    /// `explicit` is the `--config` value: when given, the file must exist.
    /// When `None`, [`DEFAULT_CONFIG_PATH`] is read if it exists. Flags in
    /// `overrides` win over the file; the result is validated.
    pub fn load(explicit: Option<&Path>, overrides: &ConfigOverrides) -> Result<Self, ConfigError> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(path, &text, overrides),
            Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
                Self::merge(AgentConfigFile::default(), overrides, path, None)
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parse configuration text as if it were the file at `path` (for tests
    /// and tools), then apply `overrides` and validate.
    pub fn from_toml(
        path: &Path,
        text: &str,
        overrides: &ConfigOverrides,
    ) -> Result<Self, ConfigError> {
        let file = parse_file(path, text)?;
        Self::merge(file, overrides, path, Some(path.to_path_buf()))
    }

    fn merge(
        file: AgentConfigFile,
        overrides: &ConfigOverrides,
        path: &Path,
        source: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let missing = |key| ConfigError::Missing {
            key,
            path: path.to_path_buf(),
        };
        let master = overrides
            .master
            .clone()
            .or(file.master)
            .ok_or_else(|| missing("master"))?;
        let node = overrides
            .node
            .clone()
            .or(file.node)
            .ok_or_else(|| missing("node"))?;
        let token = overrides
            .token
            .clone()
            .or(file.token)
            .ok_or_else(|| missing("token"))?;
        let state_dir = overrides
            .state_dir
            .clone()
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let run_dir = overrides
            .run_dir
            .clone()
            .or(file.run_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
        let heartbeat_seconds = file.heartbeat_seconds.unwrap_or(DEFAULT_HEARTBEAT_SECONDS);
        let cluster = overrides
            .cluster
            .clone()
            .or(file.cluster)
            .unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
        if let Err(e) = bramble_common::wire::validate_segment("cluster name", &cluster) {
            return Err(ConfigError::Invalid {
                key: "cluster",
                value: cluster.clone(),
                reason: format!("{e}: use the name the master was started with"),
            });
        }

        let master = BrokerUrl::parse(&master).map_err(|reason| ConfigError::Invalid {
            key: "master",
            value: master.clone(),
            reason,
        })?;
        if master.transport == MqttTransport::Tls {
            return Err(ConfigError::Invalid {
                key: "master",
                value: master.to_string(),
                reason: TLS_NOT_YET.into(),
            });
        }
        validate_node_name(&node).map_err(|reason| ConfigError::Invalid {
            key: "node",
            value: node.clone(),
            reason,
        })?;
        if token.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "token",
                value: String::new(),
                reason: "the join token is empty: use the token `bramble node add` printed for this node"
                    .into(),
            });
        }
        if token.chars().any(char::is_control) {
            return Err(ConfigError::Invalid {
                key: "token",
                value: "<redacted>".into(),
                reason:
                    "the join token contains control characters: copy it again without line breaks"
                        .into(),
            });
        }
        for (key, dir) in [("state-dir", &state_dir), ("run-dir", &run_dir)] {
            if dir.as_os_str().is_empty() {
                return Err(ConfigError::Invalid {
                    key,
                    value: String::new(),
                    reason:
                        "the directory is empty: give a path or leave the key out for the default"
                            .into(),
                });
            }
        }
        if !(1..=MAX_HEARTBEAT_SECONDS).contains(&heartbeat_seconds) {
            return Err(ConfigError::Invalid {
                key: "heartbeat-seconds",
                value: heartbeat_seconds.to_string(),
                reason: format!("use a value between 1 and {MAX_HEARTBEAT_SECONDS}"),
            });
        }
        let node_address = match overrides.node_address.clone().or(file.node_address) {
            None => None,
            Some(text) => Some(text.trim().parse::<Ipv4Addr>().map_err(|_| {
                ConfigError::Invalid {
                    key: "node-address",
                    value: text.clone(),
                    reason: "not an IPv4 address: give this node's address on the cluster network, e.g. 192.168.1.10, or leave it out to use the address of the default route's interface".into(),
                }
            })?),
        };
        let network = overrides.network.or(file.network).unwrap_or(true);
        let bridge = overrides
            .bridge
            .clone()
            .or(file.bridge)
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
        if !valid_ifname(&bridge) {
            return Err(ConfigError::Invalid {
                key: "bridge",
                value: bridge,
                reason: "not an interface name: use 1 to 15 characters without `/`, `:` or spaces, e.g. bramble0".into(),
            });
        }
        let (registries_file, registries) = match overrides.registries.clone().or(file.registries) {
            Some(p) => {
                let cfg = RegistriesConfig::load(&p).map_err(|e| ConfigError::Invalid {
                    key: "registries",
                    value: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                (Some(p), cfg)
            }
            None => {
                let p = PathBuf::from(DEFAULT_REGISTRIES_PATH);
                if p.is_file() {
                    let cfg = RegistriesConfig::load(&p).map_err(|e| ConfigError::Invalid {
                        key: "registries",
                        value: p.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    (Some(p), cfg)
                } else {
                    (None, RegistriesConfig::default())
                }
            }
        };
        Ok(Self {
            registries_file,
            registries,
            master,
            node,
            token,
            state_dir,
            run_dir,
            heartbeat_seconds,
            ca_file: file.ca_file,
            source,
            cluster,
            node_address,
            network,
            bridge,
        })
    }

    /// The effective configuration as TOML, with the token redacted: what
    /// `bramble-agent check-config` prints.
    pub fn to_redacted_toml(&self) -> String {
        let mut out = String::new();
        match &self.source {
            Some(path) => out.push_str(&format!(
                "# effective configuration ({} + flags)\n",
                path.display()
            )),
            None => out.push_str("# effective configuration (flags only, no config file)\n"),
        }
        out.push_str(&format!(
            "master = {}\n",
            toml_string(&self.master.to_string())
        ));
        out.push_str(&format!("node = {}\n", toml_string(&self.node)));
        out.push_str("token = \"<redacted>\"\n");
        out.push_str(&format!(
            "state-dir = {}\n",
            toml_string(&self.state_dir.to_string_lossy())
        ));
        out.push_str(&format!(
            "run-dir = {}\n",
            toml_string(&self.run_dir.to_string_lossy())
        ));
        out.push_str(&format!("heartbeat-seconds = {}\n", self.heartbeat_seconds));
        out.push_str(&format!("cluster = {}\n", toml_string(&self.cluster)));
        if let Some(address) = &self.node_address {
            out.push_str(&format!("node-address = \"{address}\"\n"));
        }
        out.push_str(&format!("network = {}\n", self.network));
        out.push_str(&format!("bridge = {}\n", toml_string(&self.bridge)));
        if let Some(ca) = &self.ca_file {
            out.push_str(&format!(
                "ca-file = {}\n",
                toml_string(&ca.to_string_lossy())
            ));
        }
        match &self.registries_file {
            Some(p) => {
                out.push_str(&format!(
                    "registries = {}\n",
                    toml_string(&p.to_string_lossy())
                ));
                let lines = self.registries.describe();
                if lines.is_empty() {
                    out.push_str("#   (no mirrors or configs)\n");
                }
                for line in lines {
                    out.push_str(&format!("#   {line}\n"));
                }
            }
            None => out.push_str(&format!(
                "# registries: none ({DEFAULT_REGISTRIES_PATH} does not exist); pulls go to each image's registry\n"
            )),
        }
        out
    }
}

fn parse_file(path: &Path, text: &str) -> Result<AgentConfigFile, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_column(text, span.start));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// A TOML basic string with the needed escapes.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml(Path::new("agent.toml"), text, &ConfigOverrides::default())
    }

    const GOOD: &str = "master = \"mqtt://10.0.0.1:1883\"\nnode = \"pi-01\"\ntoken = \"s3cret\"\n";

    #[test]
    fn defaults_apply() {
        let c = parse(GOOD).expect("valid config");
        assert_eq!(
            c.master,
            BrokerUrl {
                transport: MqttTransport::Tcp,
                host: "10.0.0.1".into(),
                port: 1883
            }
        );
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.run_dir, PathBuf::from(DEFAULT_RUN_DIR));
        assert_eq!(c.heartbeat_seconds, DEFAULT_HEARTBEAT_SECONDS);
        assert_eq!(c.ca_file, None);
        assert_eq!(c.cluster, DEFAULT_CLUSTER);
    }

    #[test]
    fn cluster_key_and_flag() {
        let c = parse(&format!("{GOOD}cluster = \"home\"\n")).expect("valid");
        assert_eq!(c.cluster, "home");
        assert_eq!(
            parse(&c.to_redacted_toml()).expect("round trip").cluster,
            "home"
        );
        let o = ConfigOverrides {
            cluster: Some("lab".into()),
            ..Default::default()
        };
        let c = AgentConfig::from_toml(Path::new("a.toml"), GOOD, &o).expect("valid");
        assert_eq!(c.cluster, "lab");
        assert!(parse(&format!("{GOOD}cluster = \"a/b\"\n")).is_err());
    }

    #[test]
    fn node_address_and_network_keys() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.node_address, None);
        assert!(c.network);
        let c = parse(&format!(
            "{GOOD}node-address = \"192.168.1.21\"\nnetwork = false\n"
        ))
        .expect("valid");
        assert_eq!(c.node_address, Some(Ipv4Addr::new(192, 168, 1, 21)));
        assert!(!c.network);
        let again = parse(&c.to_redacted_toml()).expect("round trip");
        assert_eq!(again.node_address, c.node_address);
        assert!(!again.network);
        let err = parse(&format!("{GOOD}node-address = \"pi\"\n")).expect_err("invalid");
        assert!(err.to_string().contains("node-address"), "{err}");
        let o = ConfigOverrides {
            network: Some(false),
            node_address: Some("10.0.0.2".into()),
            ..Default::default()
        };
        let c = AgentConfig::from_toml(Path::new("a.toml"), GOOD, &o).expect("valid");
        assert!(!c.network);
        assert_eq!(c.node_address, Some(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn bridge_key_and_flag() {
        assert_eq!(parse(GOOD).expect("valid").bridge, DEFAULT_BRIDGE);
        let c = parse(&format!("{GOOD}bridge = \"brpi1\"\n")).expect("valid");
        assert_eq!(c.bridge, "brpi1");
        assert_eq!(
            parse(&c.to_redacted_toml()).expect("round trip").bridge,
            "brpi1"
        );
        let o = ConfigOverrides {
            bridge: Some("brpi2".into()),
            ..Default::default()
        };
        let c = AgentConfig::from_toml(Path::new("a.toml"), GOOD, &o).expect("valid");
        assert_eq!(c.bridge, "brpi2");
        for bad in ["", "a/b", "a b", "sixteen-chars-xx"] {
            let err = parse(&format!("{GOOD}bridge = \"{bad}\"\n")).expect_err(bad);
            assert!(err.to_string().contains("`bridge`"), "{err}");
        }
    }

    #[test]
    fn flags_override_file() {
        let o = ConfigOverrides {
            node: Some("pi-02".into()),
            state_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let c = AgentConfig::from_toml(Path::new("a.toml"), GOOD, &o).expect("valid");
        assert_eq!(c.node, "pi-02");
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_key_is_named_with_position() {
        let err = parse(&format!("{GOOD}nodes = \"x\"\n")).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.starts_with("agent.toml:4:1: "), "{msg}");
        assert!(msg.contains("nodes"), "{msg}");
    }

    #[test]
    fn malformed_toml_has_line_and_column() {
        let err = parse("master = \"mqtt://a:1\"\nnode = \n").expect_err("malformed");
        assert!(err.to_string().starts_with("agent.toml:2:"), "{err}");
    }

    #[test]
    fn token_is_redacted_everywhere() {
        let c = parse(GOOD).expect("valid");
        assert!(!c.to_redacted_toml().contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let empty = parse("master = \"mqtt://a:1\"\nnode = \"n\"\ntoken = \" \"\n")
            .expect_err("empty token");
        assert!(empty.to_string().contains("token"));
    }

    #[test]
    fn redacted_output_parses_back() {
        let c = parse(&format!(
            "{GOOD}ca-file = \"/etc/bramble/ca \\\"x\\\".pem\"\nheartbeat-seconds = 30\n"
        ))
        .expect("valid");
        let again = parse(&c.to_redacted_toml()).expect("round trip");
        assert_eq!(again.ca_file, c.ca_file);
        assert_eq!(again.heartbeat_seconds, 30);
        assert_eq!(again.master, c.master);
    }

    #[test]
    fn bad_heartbeat() {
        assert!(parse(&format!("{GOOD}heartbeat-seconds = 0\n")).is_err());
        assert!(parse(&format!("{GOOD}heartbeat-seconds = \"ten\"\n")).is_err());
    }

    #[test]
    fn missing_key_says_where() {
        let err = parse("master = \"mqtt://a:1\"\n").expect_err("missing node");
        assert_eq!(
            err.to_string(),
            "`node` is not set: put `node = ...` in agent.toml or pass --node"
        );
    }
}

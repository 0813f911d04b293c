//! Addresses and names shared by the master, the agent and the device
//! tooling: the broker URL (`mqtt://HOST:PORT`, `mqtts://HOST:PORT`) and
//! node names, each checked once, with messages that say what a valid one
//! looks like.

use std::fmt;

/// Why an `mqtts://` address is refused: this release speaks plain MQTT only,
/// and an agent (or a flashed device image) given one would never join.
pub const TLS_NOT_YET: &str = "mqtts:// (MQTT over TLS) is not supported by this release: \
use mqtt://HOST:PORT, on a network you trust (the link is not encrypted)";

/// Plain TCP or TLS to the MQTT broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttTransport {
    /// `mqtt://`: plain TCP.
    Tcp,
    /// `mqtts://`: TLS.
    Tls,
}

/// A parsed `mqtt://HOST:PORT` or `mqtts://HOST:PORT` broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Plain or TLS.
    pub transport: MqttTransport,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parse a broker URL; the error text says what a valid one looks like.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (transport, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (MqttTransport::Tcp, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (MqttTransport::Tls, rest)
        } else {
            return Err(
                "the scheme must be mqtt:// or mqtts://, e.g. mqtt://192.168.1.10:1883".into(),
            );
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@'])
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("give only scheme, host and port, e.g. mqtt://master.local:1883".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or("an IPv6 host needs a closing bracket, e.g. mqtt://[fd00::1]:1883")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("the host is missing, e.g. mqtt://192.168.1.10:1883".into());
        }
        let port =
            port.ok_or("the port is missing, e.g. mqtt://HOST:1883 (mqtts://HOST:8883 for TLS)")?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("the port {port:?} is not a number between 1 and 65535"))?;
        Ok(Self {
            transport,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            MqttTransport::Tcp => "mqtt",
            MqttTransport::Tls => "mqtts",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Check a node name is a DNS-1123 subdomain (what Kubernetes requires of node
/// names): at most 253 characters, dot-separated labels of lowercase letters,
/// digits and `-`, each starting and ending with a letter or digit.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    const HINT: &str = "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. pi-01";
    if name.is_empty() {
        return Err(format!("the node name is empty: {HINT}"));
    }
    if name.len() > 253 {
        return Err(format!(
            "the node name is {} characters long, at most 253 are allowed",
            name.len()
        ));
    }
    for label in name.split('.') {
        let ok_edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_body = label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if label.len() > 63
            || !ok_body
            || !ok_edge(label.chars().next())
            || !ok_edge(label.chars().last())
        {
            return Err(format!("not a DNS-1123 subdomain: {HINT}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let url = BrokerUrl::parse("mqtt://10.0.0.1:1883").expect("valid");
        assert_eq!(
            (url.transport, url.host.as_str(), url.port),
            (MqttTransport::Tcp, "10.0.0.1", 1883)
        );
        let url = BrokerUrl::parse("mqtts://[fd00::1]:8883/").expect("valid");
        assert_eq!(
            (url.transport, url.host.as_str()),
            (MqttTransport::Tls, "fd00::1")
        );
        assert_eq!(url.to_string(), "mqtts://[fd00::1]:8883");
        for bad in [
            "",
            "a:1",
            "http://a:1",
            "mqtt://a",
            "mqtt://:1",
            "mqtt://a:0",
            "mqtt://a:x",
            "mqtt://a:70000",
            "mqtt://u@a:1",
            "mqtt://a:1/path",
            "mqtt://[fd00::1:1",
            "mqtt://a b:1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn node_names() {
        for good in ["pi-01", "a", "rack1.pi-3"] {
            assert!(validate_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Pi", "-a", "a-", "a..b", "a_b", &"x".repeat(64)] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
        let error = validate_node_name("Pi_1").expect_err("invalid");
        assert!(error.starts_with("not a DNS-1123 subdomain"), "{error}");
    }
}

//! The node's registry configuration in k3s' `registries.yaml` format, so a
//! k3s user brings the file unchanged:
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000", "https://mirror.example"]
//!     rewrite:
//!       "^library/(.*)": "mirrored/$1"
//!   "*":
//!     endpoint: ["https://site-cache.example"]
//! configs:
//!   "mirror.example":
//!     auth: { username: u, password: p }   # or auth: base64(u:p), identity_token
//!     tls: { ca_file: /etc/ssl/mirror.pem, cert_file: ..., key_file: ..., insecure_skip_verify: false }
//! ```
//!
//! As in k3s, a registry's mirror endpoints are tried in order and then the
//! registry itself (`docker.io` is served by `registry-1.docker.io`); a
//! rewrite applies to the mirror endpoints only. An endpoint given as
//! `http://` is plain HTTP because the file says so; otherwise plain HTTP is
//! used only for loopback registries (after HTTPS, as Docker does for
//! 127.0.0.0/8).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

/// Errors of the registry configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistriesError {
    /// The file cannot be read.
    #[error("cannot read registries file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("registries file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the field's path.
        message: String,
    },
}

/// `registries.yaml`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Mirrors by registry host (`docker.io`, `*` for every registry).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Per-host authentication and TLS, by registry or endpoint host.
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

/// One registry's mirrors.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Endpoint URLs (`https://host[:port]`), tried in order.
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Repository rewrites (regular expression -> replacement with `$1`),
    /// applied when pulling from this registry's mirror endpoints.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Authentication and TLS for one host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Credentials for a host (k3s/containerd `auth`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// `base64(username:password)`.
    #[serde(default)]
    pub auth: Option<String>,
    /// An identity (refresh) token for the token service.
    #[serde(default)]
    pub identity_token: Option<String>,
}

/// TLS for a host (k3s `tls`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle (PEM) trusted for this host, besides the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate (PEM).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// Client key (PEM).
    #[serde(default)]
    pub key_file: Option<String>,
    /// Skip certificate verification (for tests only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One place to fetch a repository from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port]` (no trailing slash, no `/v2`).
    pub base: String,
    /// `host[:port]`, the key for `configs` and credentials.
    pub host: String,
    /// The repository path on this endpoint (after any rewrite).
    pub repository: String,
    /// A mirror rather than the registry itself.
    pub mirror: bool,
}

/// The endpoint host for a registry name (`docker.io` is served by
/// `registry-1.docker.io`).
pub fn registry_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// Whether `host[:port]` names a loopback address (`localhost`,
/// `127.0.0.0/8`, `::1`).
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    name == "localhost"
        || name
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl RegistriesConfig {
    /// Reads and checks a `registries.yaml`. A missing file is an error
    /// (the caller decides whether the file is optional).
    pub fn load(path: &Path) -> Result<RegistriesConfig, RegistriesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistriesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        RegistriesConfig::parse(&text).map_err(|message| RegistriesError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks the YAML text.
    pub fn parse(text: &str) -> Result<RegistriesConfig, String> {
        if text.trim().is_empty() {
            return Ok(RegistriesConfig::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg =
            RegistriesConfig::deserialize(de).map_err(|e| format!("not a registries.yaml: {e}"))?;
        for (registry, mirror) in &cfg.mirrors {
            for e in &mirror.endpoint {
                parse_endpoint(e).map_err(|m| format!("mirrors.{registry}.endpoint: {m}"))?;
            }
            for pattern in mirror.rewrite.keys() {
                regex::Regex::new(pattern).map_err(|e| {
                    format!(
                        "mirrors.{registry}.rewrite: invalid regular expression {pattern:?}: {e}"
                    )
                })?;
            }
        }
        Ok(cfg)
    }

    /// The endpoints to try for `repository` (`library/busybox`) of
    /// `registry` (`docker.io`), in order.
    pub fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let mut out = Vec::new();
        let upstream_host = registry_host(registry);
        if let Some(m) = mirror {
            let repo = rewrite(&m.rewrite, repository);
            for e in &m.endpoint {
                if let Ok((base, host)) = parse_endpoint(e) {
                    let is_upstream = host == upstream_host || host == registry;
                    out.push(Endpoint {
                        base,
                        host,
                        repository: if is_upstream {
                            repository.to_string()
                        } else {
                            repo.clone()
                        },
                        mirror: !is_upstream,
                    });
                }
            }
        }
        let default_https = Endpoint {
            base: format!("https://{upstream_host}"),
            host: upstream_host.to_string(),
            repository: repository.to_string(),
            mirror: false,
        };
        if !out.iter().any(|e| e.base == default_https.base) {
            out.push(default_https);
        }
        if is_loopback(upstream_host) {
            let plain = format!("http://{upstream_host}");
            if !out.iter().any(|e| e.base == plain) {
                out.push(Endpoint {
                    base: plain,
                    host: upstream_host.to_string(),
                    repository: repository.to_string(),
                    mirror: false,
                });
            }
        }
        out
    }

    /// The configuration for `host`, if any.
    pub fn host_config(&self, host: &str) -> Option<&HostConfig> {
        self.configs.get(host).or_else(|| {
            self.configs
                .iter()
                .find(|(k, _)| parse_endpoint(k).map(|(_, h)| h == host).unwrap_or(false))
                .map(|(_, v)| v)
        })
    }

    /// A one-line-per-item description for `check-config`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (registry, m) in &self.mirrors {
            out.push(format!(
                "mirror {registry}: {}{}",
                if m.endpoint.is_empty() {
                    "(no endpoints)".to_string()
                } else {
                    m.endpoint.join(", ")
                },
                if m.rewrite.is_empty() {
                    String::new()
                } else {
                    format!(" ({} rewrite rule(s))", m.rewrite.len())
                }
            ));
        }
        for (host, c) in &self.configs {
            let mut parts = Vec::new();
            if let Some(a) = &c.auth {
                if a.identity_token.is_some() {
                    parts.push("identity token".to_string());
                } else if let Some(u) = &a.username {
                    parts.push(format!("user {u}"));
                } else if a.auth.is_some() {
                    parts.push("auth".to_string());
                }
            }
            if let Some(t) = &c.tls {
                if let Some(ca) = &t.ca_file {
                    parts.push(format!("ca {ca}"));
                }
                if t.cert_file.is_some() {
                    parts.push("client certificate".into());
                }
                if t.insecure_skip_verify {
                    parts.push("insecure_skip_verify".into());
                }
            }
            out.push(format!("config {host}: {}", parts.join(", ")));
        }
        out
    }
}

fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (pattern, replacement) in rules {
        if let Ok(re) = regex::Regex::new(pattern) {
            if re.is_match(repository) {
                return re.replace(repository, replacement.as_str()).to_string();
            }
        }
    }
    repository.to_string()
}

/// Splits an endpoint URL into its base (`scheme://host[:port][/path]`) and
/// host. A URL without a scheme is HTTPS; a trailing `/v2` is dropped.
pub fn parse_endpoint(url: &str) -> Result<(String, String), String> {
    let url = url.trim().trim_end_matches('/');
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("https".to_string(), url),
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "{url:?}: only http:// and https:// endpoints exist"
        ));
    }
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    {
        return Err(format!("{url:?} has no valid host"));
    }
    let path = path
        .strip_suffix("v2")
        .unwrap_or(path)
        .trim_end_matches('/');
    let base = if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    };
    Ok((base, host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
    rewrite:
      "^library/(.*)": "mirrored/$1"
  "*":
    endpoint: ["mirror.example:8443/v2"]
configs:
  "127.0.0.1:5000":
    auth:
      username: alice
      password: secret
    tls:
      insecure_skip_verify: true
"#;

    #[test]
    fn k3s_file_gives_mirrors_then_upstream() {
        let cfg = RegistriesConfig::parse(K3S).expect("parse");
        let eps = cfg.endpoints("docker.io", "library/nginx");
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].base, "http://127.0.0.1:5000");
        assert_eq!(eps[0].repository, "mirrored/nginx");
        assert!(eps[0].mirror);
        assert_eq!(eps[1].base, "https://registry-1.docker.io");
        assert_eq!(eps[1].repository, "library/nginx");
        let eps = cfg.endpoints("ghcr.io", "o/r");
        assert_eq!(eps[0].base, "https://mirror.example:8443");
        assert_eq!(eps[0].repository, "o/r");
        assert_eq!(eps[1].base, "https://ghcr.io");
        let c = cfg.host_config("127.0.0.1:5000").expect("config");
        assert_eq!(
            c.auth.as_ref().and_then(|a| a.username.as_deref()),
            Some("alice")
        );
    }

    #[test]
    fn loopback_registries_may_use_plain_http() {
        let cfg = RegistriesConfig::default();
        let eps = cfg.endpoints("127.0.0.1:5000", "app");
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].base, "https://127.0.0.1:5000");
        assert_eq!(eps[1].base, "http://127.0.0.1:5000");
        let eps = cfg.endpoints("registry.example:5000", "app");
        assert_eq!(eps.len(), 1, "no plain HTTP for {eps:?}");
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        let e = RegistriesConfig::parse("mirrors:\n  docker.io:\n    endpoints: [x]\n")
            .expect_err("unknown key");
        assert!(e.contains("endpoints"), "{e}");
        let e = RegistriesConfig::parse("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n")
            .expect_err("bad scheme");
        assert!(e.contains("mirrors.docker.io.endpoint"), "{e}");
        let e = RegistriesConfig::parse("mirrors:\n  docker.io:\n    rewrite:\n      \"(\": x\n")
            .expect_err("bad regex");
        assert!(e.contains("regular expression"), "{e}");
    }
}

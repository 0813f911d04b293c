//! Registry credentials: the `WWW-Authenticate` challenge (Basic, Bearer
//! with realm, service and scope), the token answer, and the keyring built
//! from pull secrets (`kubernetes.io/dockerconfigjson` with its `auths`
//! object, the older `kubernetes.io/dockercfg` without it), matched against
//! a registry host the way the kubelet's credential keyring does (scheme
//! and `/v1/` ignored, `*.example.com` globs, path prefixes, the Docker Hub
//! aliases).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name and password (HTTP basic, or to get a token).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// An identity (refresh) token for the token service.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

impl Credentials {
    /// The `Authorization` header value for HTTP basic, if these are basic.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken(_) => None,
        }
    }

    /// A short identity for cache keys (never the secret itself).
    pub fn identity(&self) -> String {
        use sha2::Digest;
        let raw = match self {
            Credentials::Basic { username, password } => format!("b:{username}:{password}"),
            Credentials::IdentityToken(t) => format!("t:{t}"),
        };
        super::unpack::hex(&sha2::Sha256::digest(raw.as_bytes()))[..16].to_string()
    }

    /// From the fields of a `registries.yaml` or docker config entry.
    pub fn from_parts(
        username: Option<&str>,
        password: Option<&str>,
        auth: Option<&str>,
        identity_token: Option<&str>,
    ) -> Option<Credentials> {
        if let Some(t) = identity_token.filter(|t| !t.is_empty()) {
            return Some(Credentials::IdentityToken(t.to_string()));
        }
        if let (Some(u), Some(p)) = (username, password) {
            if !u.is_empty() {
                return Some(Credentials::Basic {
                    username: u.to_string(),
                    password: p.to_string(),
                });
            }
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth?.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        Some(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic.
    Basic,
    /// The token flow.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter.
        service: Option<String>,
        /// `scope` parameter.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header (`Bearer realm="...",service="..."`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (_, c) => {
                        value.push(c);
                        escaped = false;
                    }
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// The token service's answer.
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    /// The token (Docker's name).
    #[serde(default)]
    pub token: Option<String>,
    /// The token (OAuth2's name).
    #[serde(default)]
    pub access_token: Option<String>,
    /// Lifetime in seconds (default 60, as the spec says).
    #[serde(default)]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfigEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Credentials from pull secrets, by registry key, in the order given.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<(String, Credentials)>,
}

impl Keyring {
    /// Adds the entries of one secret's data: `.dockerconfigjson` or
    /// `.dockercfg`. Returns an error naming what is wrong.
    pub fn add_secret(&mut self, data: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
        let entries: BTreeMap<String, DockerConfigEntry> =
            if let Some(json) = data.get(".dockerconfigjson") {
                serde_json::from_slice::<DockerConfigJson>(json)
                    .map_err(|e| format!("invalid .dockerconfigjson: {e}"))?
                    .auths
            } else if let Some(json) = data.get(".dockercfg") {
                serde_json::from_slice(json).map_err(|e| format!("invalid .dockercfg: {e}"))?
            } else {
                return Err("the secret has neither .dockerconfigjson nor .dockercfg".into());
            };
        for (key, e) in entries {
            if let Some(c) = Credentials::from_parts(
                e.username.as_deref(),
                e.password.as_deref(),
                e.auth.as_deref(),
                e.identitytoken.as_deref(),
            ) {
                self.entries.push((key, c));
            }
        }
        Ok(())
    }

    /// Adds one entry.
    pub fn add(&mut self, key: &str, credentials: Credentials) {
        self.entries.push((key.to_string(), credentials));
    }

    /// Whether the keyring is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for `repository` (`library/nginx`) on `host`
    /// (`docker.io`, `127.0.0.1:5000`): the most specific match (longest
    /// key), as the kubelet's keyring orders them.
    pub fn lookup(&self, host: &str, repository: &str) -> Option<&Credentials> {
        let host = canonical_host(host);
        let mut best: Option<(usize, &Credentials)> = None;
        for (key, c) in &self.entries {
            let (khost, kpath) = split_key(key);
            if !host_matches(&canonical_host(khost), &host) {
                continue;
            }
            let path_matches = kpath.is_empty()
                || repository == kpath
                || repository.starts_with(&format!("{kpath}/"));
            if !path_matches {
                continue;
            }
            let score = key.len();
            if best.map(|(s, _)| score > s).unwrap_or(true) {
                best = Some((score, c));
            }
        }
        best.map(|(_, c)| c)
    }
}

fn canonical_host(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    match h.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => h,
    }
}

fn split_key(key: &str) -> (&str, &str) {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let path = path.trim_end_matches('/');
    // Docker Hub's legacy key `https://index.docker.io/v1/`.
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    (host, path)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (n.into(), p.into()),
            _ => (h.into(), String::new()),
        }
    };
    let (pn, pp) = split(pattern);
    let (hn, hp) = split(host);
    if pp != hp {
        return false;
    }
    let pl: Vec<&str> = pn.split('.').collect();
    let hl: Vec<&str> = hn.split('.').collect();
    pl.len() == hl.len()
        && pl
            .iter()
            .zip(&hl)
            .all(|(p, h)| *p == "*" || glob_label(p, h))
}

fn glob_label(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((pre, post)) => {
            label.len() >= pre.len() + post.len() && label.starts_with(pre) && label.ends_with(post)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn keyring_matches_like_the_kubelet() {
        let mut k = Keyring::default();
        let json = br#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnB3"},"127.0.0.1:5000":{"username":"alice","password":"pw"},"*.example.com/team":{"username":"t","password":"p"}}}"#;
        let mut data = BTreeMap::new();
        data.insert(".dockerconfigjson".to_string(), json.to_vec());
        k.add_secret(&data).expect("secret");
        assert_eq!(
            k.lookup("docker.io", "library/nginx"),
            Some(&Credentials::Basic {
                username: "hub".into(),
                password: "pw".into()
            })
        );
        assert!(matches!(
            k.lookup("127.0.0.1:5000", "app"),
            Some(Credentials::Basic { username, .. }) if username == "alice"
        ));
        assert!(k.lookup("127.0.0.1:5001", "app").is_none());
        assert!(k.lookup("r.example.com", "team/app").is_some());
        assert!(k.lookup("r.example.com", "other/app").is_none());
        let mut cfg = BTreeMap::new();
        cfg.insert(
            ".dockercfg".to_string(),
            br#"{"ghcr.io":{"auth":"dTpw"}}"#.to_vec(),
        );
        let mut k = Keyring::default();
        k.add_secret(&cfg).expect("dockercfg");
        assert!(k.lookup("ghcr.io", "o/r").is_some());
        let mut bad = BTreeMap::new();
        bad.insert(".dockerconfigjson".to_string(), b"{".to_vec());
        assert!(k.add_secret(&bad).is_err());
    }
}

//! A small OCI distribution (registry v2) client on `ureq` 3 with rustls
//! on ring: manifests (bounded in size, digest checked), blobs streamed to
//! disk with `Range` resumption, and the registry's authentication: HTTP
//! basic and the bearer-token challenge, with tokens cached per host,
//! repository and credentials until they expire.
//!
//! Everything blocks; the puller runs it on its own threads. A read that
//! gets no byte for the stall timeout fails (there is no total deadline,
//! so a slow link is not a failure); the caller resumes.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::auth::{parse_challenge, Challenge, Credentials, TokenAnswer};
use super::registries::{Endpoint, RegistriesConfig};
use super::unpack::hex;

/// The largest manifest or index accepted (containerd's limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest image config accepted.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// The largest token answer or error body read.
const MAX_SMALL_BODY: u64 = 64 << 10;

/// Media types a pull accepts for manifests, in `Accept` order.
pub const MANIFEST_ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry cannot be reached (DNS, connection, TLS, timeout).
    #[error("{method} {url}: {message}")]
    Unreachable {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The transport's error.
        message: String,
    },
    /// The registry refused the credentials (or there were none).
    #[error(
        "failed to authorize: unexpected status from {method} request to {url}: {status}{detail}"
    )]
    Unauthorized {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// `401 Unauthorized` or `403 Forbidden`.
        status: String,
        /// The registry's error text (`: ...`), if any.
        detail: String,
    },
    /// The manifest or blob does not exist.
    #[error("{what}: not found")]
    NotFound {
        /// The reference or digest.
        what: String,
    },
    /// Any other unexpected answer.
    #[error("unexpected status from {method} request to {url}: {status}{detail}")]
    Status {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status line.
        status: String,
        /// The registry's error text (`: ...`), if any.
        detail: String,
    },
    /// A document is larger than allowed.
    #[error("{what} is larger than {limit} bytes: refused")]
    TooLarge {
        /// What.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// Content does not match its digest.
    #[error("{what} has digest {actual}, not {expected}: the registry sent other content or the download is corrupt")]
    DigestMismatch {
        /// What.
        what: String,
        /// The expected digest.
        expected: String,
        /// What the content hashes to.
        actual: String,
    },
    /// Content does not have the size its descriptor gives.
    #[error("blob {digest} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The digest.
        digest: String,
        /// Size from the descriptor.
        expected: u64,
        /// Size received.
        actual: u64,
    },
    /// A malformed answer (token, Content-Range, manifest).
    #[error("{0}")]
    Protocol(String),
    /// A local file error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The pull was cancelled (the pod went away or the agent stops).
    #[error("the pull was cancelled")]
    Cancelled,
}

impl RegistryError {
    /// Whether the error says the registry could not be reached at all
    /// (as opposed to an answer it gave).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Mirrors, credentials and TLS per host.
    pub registries: RegistriesConfig,
    /// A read that gets no byte for this long fails (and is resumed).
    pub stall_timeout: Duration,
    /// Connection set-up limit.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            registries: RegistriesConfig::default(),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// A fetched manifest or index.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes exactly as served (their digest is the manifest's).
    pub bytes: Vec<u8>,
    /// Media type (from `Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// `sha256:` digest of the bytes.
    pub digest: String,
}

/// Byte counters of a pull (shared by its blob downloads).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes received from registries.
    pub received: AtomicU64,
    /// Bytes already on disk from earlier attempts (not fetched again).
    pub resumed: AtomicU64,
}

/// One blob to download into a partial file.
#[derive(Debug, Clone, Copy)]
pub struct BlobDownload<'a> {
    /// `sha256:` digest.
    pub digest: &'a str,
    /// Size from the manifest.
    pub size: u64,
    /// The partial file (kept across attempts).
    pub partial: &'a Path,
}

/// The registry client (cheap to share behind an `Arc`).
pub struct RegistryClient {
    opts: ClientOptions,
    agents: Mutex<HashMap<String, ureq::Agent>>,
    /// `Authorization` values by (host, repository, credentials identity).
    auth_cache: Mutex<HashMap<String, (String, Option<Instant>)>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").finish_non_exhaustive()
    }
}

fn system_roots() -> Arc<Vec<ureq::tls::Certificate<'static>>> {
    static ROOTS: OnceLock<Arc<Vec<ureq::tls::Certificate<'static>>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut out = Vec::new();
            for file in [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ] {
                if let Ok(pem) = fs::read(file) {
                    out.extend(pem_certs(&pem));
                    break;
                }
            }
            Arc::new(out)
        })
        .clone()
}

fn pem_certs(pem: &[u8]) -> Vec<ureq::tls::Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

fn transport_error(method: &str, url: &str, e: &ureq::Error) -> RegistryError {
    RegistryError::Unreachable {
        method: method.into(),
        url: url.into(),
        message: match e {
            ureq::Error::Timeout(t) => format!("timed out ({t:?})"),
            ureq::Error::HostNotFound => "host not found".into(),
            other => other.to_string(),
        },
    }
}

fn status_text(code: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}").trim().to_string()
}

/// The registry's JSON error text (`: MANIFEST_UNKNOWN: manifest unknown`).
fn error_detail(resp: &mut ureq::http::Response<ureq::Body>) -> String {
    let Ok(body) = resp
        .body_mut()
        .with_config()
        .limit(MAX_SMALL_BODY)
        .read_to_vec()
    else {
        return String::new();
    };
    #[derive(serde::Deserialize)]
    struct Errs {
        #[serde(default)]
        errors: Vec<Err1>,
    }
    #[derive(serde::Deserialize)]
    struct Err1 {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errs>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}

impl RegistryClient {
    /// A client with these options.
    pub fn new(opts: ClientOptions) -> RegistryClient {
        RegistryClient {
            opts,
            agents: Mutex::new(HashMap::new()),
            auth_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn agent(&self, host: &str) -> Result<ureq::Agent, RegistryError> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = agents.get(host) {
            return Ok(a.clone());
        }
        let mut roots = (*system_roots()).clone();
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
        if let Some(t) = self
            .opts
            .registries
            .host_config(host)
            .and_then(|c| c.tls.as_ref())
        {
            let read = |p: &str| {
                fs::read(p).map_err(|source| RegistryError::Io {
                    path: p.to_string(),
                    source,
                })
            };
            if let Some(ca) = &t.ca_file {
                let certs = pem_certs(&read(ca)?);
                if certs.is_empty() {
                    return Err(RegistryError::Protocol(format!(
                        "ca_file {ca} for {host} holds no PEM certificate"
                    )));
                }
                roots.extend(certs);
            }
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                let chain = pem_certs(&read(cert)?);
                let key = ureq::tls::PrivateKey::from_pem(&read(key)?).map_err(|e| {
                    RegistryError::Protocol(format!("key_file {key} for {host}: {e}"))
                })?;
                tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
            }
            tls = tls.disable_verification(t.insecure_skip_verify);
        }
        let tls = tls
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(self.opts.connect_timeout))
            .timeout_per_read(Some(self.opts.stall_timeout))
            .timeout_per_write(Some(self.opts.stall_timeout))
            .timeout_recv_response(Some(self.opts.stall_timeout))
            .max_redirects(8)
            .user_agent(concat!("bramble-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::new_with_config(config);
        agents.insert(host.to_string(), agent.clone());
        Ok(agent)
    }

    fn cache_key(ep: &Endpoint, creds: Option<&Credentials>) -> String {
        format!(
            "{}|{}|{}",
            ep.base,
            ep.repository,
            creds.map(|c| c.identity()).unwrap_or_default()
        )
    }

    fn cached_auth(&self, key: &str) -> Option<String> {
        let cache = self.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(_, exp)| exp.map(|e| Instant::now() < e).unwrap_or(true))
            .map(|(v, _)| v.clone())
    }

    /// Sends a GET (or HEAD) to `url` on `ep`, answering the registry's
    /// authentication challenge once. Answers with any status but 401.
    pub fn send(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let agent = self.agent(&ep.host)?;
        let key = Self::cache_key(ep, creds);
        let call = |auth: Option<&str>| -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
            let mut req = if method == "HEAD" {
                agent.head(url)
            } else {
                agent.get(url)
            };
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.call().map_err(|e| transport_error(method, url, &e))
        };
        let cached = self.cached_auth(&key);
        let mut resp = call(cached.as_deref())?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let auth = match challenge {
            Some(Challenge::Basic) => match creds.and_then(|c| c.basic_header()) {
                Some(h) if cached.as_deref() != Some(h.as_str()) => (h, None),
                _ => {
                    let detail = error_detail(&mut resp);
                    return Err(RegistryError::Unauthorized {
                        method: method.into(),
                        url: url.into(),
                        status: status_text(401),
                        detail,
                    });
                }
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", ep.repository));
                let (token, ttl) =
                    self.fetch_token(ep, creds, &realm, service.as_deref(), &scope)?;
                (format!("Bearer {token}"), Some(Instant::now() + ttl))
            }
            None => {
                let detail = error_detail(&mut resp);
                return Err(RegistryError::Unauthorized {
                    method: method.into(),
                    url: url.into(),
                    status: status_text(401),
                    detail,
                });
            }
        };
        self.auth_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, auth.clone());
        let mut resp = call(Some(&auth.0))?;
        if resp.status().as_u16() == 401 {
            let detail = error_detail(&mut resp);
            return Err(RegistryError::Unauthorized {
                method: method.into(),
                url: url.into(),
                status: status_text(401),
                detail,
            });
        }
        Ok(resp)
    }

    fn fetch_token(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let agent = self.agent(&ep.host)?;
        let mut query = format!("scope={}", enc(scope));
        if let Some(s) = service {
            query.push_str(&format!("&service={}", enc(s)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{query}");
        let result = match creds {
            Some(Credentials::IdentityToken(t)) => {
                let mut form = format!(
                    "grant_type=refresh_token&client_id=bramble&refresh_token={}&scope={}",
                    enc(t),
                    enc(scope)
                );
                if let Some(s) = service {
                    form.push_str(&format!("&service={}", enc(s)));
                }
                agent
                    .post(realm)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .send(form.as_bytes())
            }
            Some(c @ Credentials::Basic { .. }) => {
                let mut req = agent.get(&url);
                if let Some(h) = c.basic_header() {
                    req = req.header("Authorization", h);
                }
                req.call()
            }
            None => agent.get(&url).call(),
        };
        let what = if creds.is_some() { "" } else { "anonymous " };
        let mut resp = result.map_err(|e| transport_error("GET", realm, &e))?;
        let code = resp.status().as_u16();
        if code != 200 {
            let detail = error_detail(&mut resp);
            let err = RegistryError::Unauthorized {
                method: if matches!(creds, Some(Credentials::IdentityToken(_))) {
                    "POST".into()
                } else {
                    "GET".into()
                },
                url: format!("{realm} (fetching an {what}token)"),
                status: status_text(code),
                detail,
            };
            return Err(err);
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_to_vec()
            .map_err(|e| RegistryError::Protocol(format!("reading a token from {realm}: {e}")))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Protocol(format!("malformed token from {realm}: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol(format!("{realm} answered without a token")))?;
        // Renew a little before the registry's expiry (60 s by default).
        let ttl = Duration::from_secs(answer.expires_in.unwrap_or(60).max(10) - 5);
        Ok((token, ttl))
    }

    /// Fetches the manifest `reference` (a tag or a digest) of `ep`'s
    /// repository. A digest reference is checked against the content, and
    /// `expected_size` when given.
    pub fn fetch_manifest(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        reference: &str,
        expected_size: Option<u64>,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/v2/{}/manifests/{reference}", ep.base, ep.repository);
        let mut resp = self.send(
            ep,
            creds,
            "GET",
            &url,
            &[("Accept", MANIFEST_ACCEPT.join(", "))],
        )?;
        let code = resp.status().as_u16();
        if code == 404 {
            return Err(RegistryError::NotFound {
                what: format!("{}/{}:{reference}", ep.host, ep.repository)
                    .replace(":sha256:", "@sha256:"),
            });
        }
        if code == 403 {
            let detail = error_detail(&mut resp);
            return Err(RegistryError::Unauthorized {
                method: "GET".into(),
                url,
                status: status_text(code),
                detail,
            });
        }
        if code != 200 {
            let detail = error_detail(&mut resp);
            return Err(RegistryError::Status {
                method: "GET".into(),
                url,
                status: status_text(code),
                detail,
            });
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit = expected_size
            .unwrap_or(MAX_MANIFEST_BYTES)
            .min(MAX_MANIFEST_BYTES);
        let bytes = read_bounded(resp.body_mut(), limit, &format!("manifest {reference}"))?;
        let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        if let Some(size) = expected_size {
            if bytes.len() as u64 != size {
                return Err(RegistryError::SizeMismatch {
                    digest: reference.to_string(),
                    expected: size,
                    actual: bytes.len() as u64,
                });
            }
        }
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            header_digest.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {reference}"),
                    expected,
                    actual: digest,
                });
            }
        }
        let media_type = if MANIFEST_ACCEPT.contains(&content_type.as_str()) {
            content_type
        } else {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Probe {
                #[serde(default)]
                media_type: Option<String>,
                #[serde(default)]
                manifests: Option<serde_json::Value>,
                #[serde(default)]
                layers: Option<serde_json::Value>,
            }
            let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| {
                RegistryError::Protocol(format!("manifest {reference} is not JSON: {e}"))
            })?;
            match (probe.media_type, probe.manifests, probe.layers) {
                (Some(m), _, _) => m,
                (None, Some(_), _) => MANIFEST_ACCEPT[0].to_string(),
                (None, None, Some(_)) => MANIFEST_ACCEPT[2].to_string(),
                _ => content_type,
            }
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Fetches a small blob (an image config) into memory, checking its
    /// size and digest.
    pub fn fetch_small_blob(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        digest: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if size > limit {
            return Err(RegistryError::TooLarge {
                what: format!("blob {digest}"),
                limit,
            });
        }
        let url = format!("{}/v2/{}/blobs/{digest}", ep.base, ep.repository);
        let mut resp = self.send(ep, creds, "GET", &url, &[])?;
        check_blob_status(&mut resp, &url, digest)?;
        let bytes = read_bounded(resp.body_mut(), size, &format!("blob {digest}"))?;
        if bytes.len() as u64 != size {
            return Err(RegistryError::SizeMismatch {
                digest: digest.into(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        let actual = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.into(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Makes one attempt at getting blob `digest` (of `size` bytes) into
    /// the file `partial`, appending to what it already holds with a
    /// `Range` request. Returns `Ok(true)` when the file holds the whole
    /// blob with the right digest, `Ok(false)` when the attempt was cut
    /// (the caller retries; the bytes received are kept). A digest or size
    /// mismatch of the complete blob removes the file and fails.
    pub fn fetch_blob_attempt(
        &self,
        ep: &Endpoint,
        creds: Option<&Credentials>,
        blob: &BlobDownload<'_>,
        cancel: &AtomicBool,
        progress: &Progress,
    ) -> Result<bool, RegistryError> {
        let BlobDownload {
            digest,
            size,
            partial,
        } = *blob;
        let io_err = |source: io::Error| RegistryError::Io {
            path: partial.display().to_string(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(io_err)?;
        let mut offset = file.metadata().map_err(io_err)?.len();
        if offset > size {
            file.set_len(0).map_err(io_err)?;
            offset = 0;
        }
        // Rehash what is already there (it may be from before a reboot).
        let mut hasher = Sha256::new();
        if offset > 0 {
            file.seek(io::SeekFrom::Start(0)).map_err(io_err)?;
            let mut left = offset;
            let mut buf = vec![0u8; 64 << 10];
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = file.read(&mut buf[..want]).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            if left > 0 {
                file.set_len(0).map_err(io_err)?;
                offset = 0;
                hasher = Sha256::new();
            }
        }
        if offset < size {
            let url = format!("{}/v2/{}/blobs/{digest}", ep.base, ep.repository);
            let headers = if offset > 0 {
                vec![("Range", format!("bytes={offset}-"))]
            } else {
                Vec::new()
            };
            let mut resp = self.send(ep, creds, "GET", &url, &headers)?;
            let code = resp.status().as_u16();
            match code {
                206 if offset > 0 => {
                    let start = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(content_range_start);
                    if start != Some(offset) {
                        // Not where we asked: start over rather than
                        // splice in the wrong bytes.
                        tracing::warn!(%digest, asked = offset, got = ?start, "registry answered a range that does not start where asked; downloading from zero");
                        file.set_len(0).map_err(io_err)?;
                        return Ok(false);
                    }
                    progress.resumed.fetch_add(offset, Ordering::Relaxed);
                    tracing::info!(%digest, offset, size, "resuming blob download");
                }
                200 => {
                    if offset > 0 {
                        tracing::info!(%digest, offset, "registry ignored the range: downloading from zero");
                    }
                    file.set_len(0).map_err(io_err)?;
                    offset = 0;
                    hasher = Sha256::new();
                }
                416 => {
                    file.set_len(0).map_err(io_err)?;
                    return Ok(false);
                }
                _ => {
                    check_blob_status(&mut resp, &url, digest)?;
                    let detail = error_detail(&mut resp);
                    return Err(RegistryError::Status {
                        method: "GET".into(),
                        url,
                        status: status_text(code),
                        detail,
                    });
                }
            }
            file.seek(io::SeekFrom::Start(offset)).map_err(io_err)?;
            let mut reader = resp.body_mut().as_reader();
            let mut buf = vec![0u8; 64 << 10];
            let mut written = offset;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    let _ = file.flush();
                    return Err(RegistryError::Cancelled);
                }
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::info!(%digest, received = written, size, error = %e, "blob download cut; it resumes from here");
                        file.flush().map_err(io_err)?;
                        return Ok(false);
                    }
                };
                if written + n as u64 > size {
                    file.set_len(0).map_err(io_err)?;
                    let _ = fs::remove_file(partial);
                    return Err(RegistryError::SizeMismatch {
                        digest: digest.into(),
                        expected: size,
                        actual: written + n as u64,
                    });
                }
                file.write_all(&buf[..n]).map_err(io_err)?;
                hasher.update(&buf[..n]);
                written += n as u64;
                progress.received.fetch_add(n as u64, Ordering::Relaxed);
            }
            file.flush().map_err(io_err)?;
            if written < size {
                return Ok(false);
            }
        }
        let actual = format!("sha256:{}", hex(&hasher.finalize()));
        if actual != digest {
            drop(file);
            let _ = fs::remove_file(partial);
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.into(),
                actual,
            });
        }
        file.sync_all().map_err(io_err)?;
        Ok(true)
    }
}

fn check_blob_status(
    resp: &mut ureq::http::Response<ureq::Body>,
    url: &str,
    digest: &str,
) -> Result<(), RegistryError> {
    let code = resp.status().as_u16();
    match code {
        200 | 206 => Ok(()),
        404 => Err(RegistryError::NotFound {
            what: format!("blob {digest}"),
        }),
        403 => {
            let detail = error_detail(resp);
            Err(RegistryError::Unauthorized {
                method: "GET".into(),
                url: url.into(),
                status: status_text(code),
                detail,
            })
        }
        _ => {
            let detail = error_detail(resp);
            Err(RegistryError::Status {
                method: "GET".into(),
                url: url.into(),
                status: status_text(code),
                detail,
            })
        }
    }
}

fn read_bounded(body: &mut ureq::Body, limit: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    let mut reader = body.as_reader().take(limit + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|e| RegistryError::Protocol(format!("reading {what}: {e}")))?;
    if out.len() as u64 > limit {
        return Err(RegistryError::TooLarge {
            what: what.into(),
            limit,
        });
    }
    Ok(out)
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
pub fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, _) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start_parses() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}

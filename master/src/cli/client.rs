//! The CLI's connection to the master: the kubeconfig (the same file kubectl
//! uses) and an HTTPS client that trusts the cluster's CA and sends the token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bramble_common::meta::Status;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::Value;

/// Errors talking to the master.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No kubeconfig could be found or read.
    #[error("{0}")]
    Config(String),
    /// The master could not be reached.
    #[error("cannot reach the master at {server}: {reason}")]
    Unreachable {
        /// The address tried.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The master answered with an error status.
    #[error("{}", .0.message)]
    Api(Box<Status>),
}

impl ClientError {
    /// The HTTP code of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct KubeConfig {
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(default, rename = "current-context")]
    current_context: String,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Debug, Default, Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(default, rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(default, rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
    #[serde(default, rename = "insecure-skip-tls-verify")]
    insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct ContextEntry {
    cluster: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// Where the CLI looks for a kubeconfig, in order.
pub fn kubeconfig_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    if let Some(env) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&env).collect();
    }
    let mut paths = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".kube/config"));
    }
    paths.push(PathBuf::from(super::DEFAULT_DATA_DIR).join("admin.kubeconfig"));
    paths
}

/// A connection to the master.
pub struct Client {
    server: String,
    token: Option<String>,
    /// The namespace of the kubeconfig's current context.
    pub default_namespace: String,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A response body as a stream of chunks.
pub type ResponseBody = hyper::body::Incoming;

impl Client {
    /// Connect using the first kubeconfig found.
    pub fn from_kubeconfig(explicit: Option<&Path>) -> Result<Client, ClientError> {
        let candidates = kubeconfig_candidates(explicit);
        let path = candidates.iter().find(|p| p.exists()).ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            ClientError::Config(format!(
                "no kubeconfig found (tried {}); pass --kubeconfig FILE or set KUBECONFIG (the master writes DATA_DIR/admin.kubeconfig on first start)",
                tried.join(", ")
            ))
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Config(format!("cannot read kubeconfig {}: {e}", path.display()))
        })?;
        let config: KubeConfig = serde_yaml::from_str(&text).map_err(|e| {
            ClientError::Config(format!("kubeconfig {} is malformed: {e}", path.display()))
        })?;
        Self::from_parsed(config, path)
    }

    fn from_parsed(config: KubeConfig, path: &Path) -> Result<Client, ClientError> {
        let bad =
            |what: String| ClientError::Config(format!("kubeconfig {}: {what}", path.display()));
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == config.current_context)
            .or_else(|| config.contexts.first())
            .ok_or_else(|| bad("has no context".into()))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.value.cluster)
            .ok_or_else(|| {
                bad(format!(
                    "context names cluster {:?}, which is not defined",
                    context.value.cluster
                ))
            })?;
        let user = config.users.iter().find(|u| u.name == context.value.user);
        let token = match user {
            Some(u) => match (&u.value.token, &u.value.token_file) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(file)) => Some(
                    std::fs::read_to_string(file)
                        .map_err(|e| bad(format!("cannot read tokenFile {}: {e}", file.display())))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            },
            None => None,
        };
        let ca_pem = match (&cluster.value.ca_data, &cluster.value.ca_file) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| bad(format!("certificate-authority-data is not base64: {e}")))?,
            ),
            (None, Some(file)) => Some(std::fs::read(file).map_err(|e| {
                bad(format!(
                    "cannot read certificate-authority {}: {e}",
                    file.display()
                ))
            })?),
            (None, None) => None,
        };
        let tls = tls_config(ca_pem.as_deref(), cluster.value.insecure).map_err(bad)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Client {
            server: cluster.value.server.trim_end_matches('/').to_string(),
            token,
            default_namespace: context
                .value
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            http,
        })
    }

    /// The master's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Send a request; returns the status and the body stream.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, ResponseBody), ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.server, path));
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder = builder.header("accept", accept.unwrap_or("application/json"));
        builder = builder.header("user-agent", concat!("bramble/", env!("CARGO_PKG_VERSION")));
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Config(format!("bad request: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ClientError::Unreachable {
                server: self.server.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        Ok((status, response.into_body()))
    }

    /// Send a `GET` asking to upgrade the connection with `headers` (a
    /// WebSocket handshake); the whole response, for `hyper::upgrade::on`.
    pub async fn upgrade(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<ResponseBody>, ClientError> {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{}", self.server, path));
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        builder = builder.header("user-agent", concat!("bramble/", env!("CARGO_PKG_VERSION")));
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Config(format!("bad request: {e}")))?;
        self.http
            .request(request)
            .await
            .map_err(|e| ClientError::Unreachable {
                server: self.server.clone(),
                reason: error_chain(&e),
            })
    }

    /// Send a request and decode the JSON answer; error statuses become [`ClientError::Api`].
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let bytes = self.bytes(method, path, content_type, accept, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreachable {
            server: self.server.clone(),
            reason: format!("the answer is not JSON: {e}"),
        })
    }

    /// Send a request and collect the raw answer; error statuses become [`ClientError::Api`].
    pub async fn bytes(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        let (status, body) = self.send(method, path, content_type, accept, body).await?;
        let bytes = body
            .collect()
            .await
            .map_err(|e| ClientError::Unreachable {
                server: self.server.clone(),
                reason: error_chain(&e),
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Api(Box::new(status_from(status, &bytes))));
        }
        Ok(bytes)
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(Method::GET, path, None, None, Vec::new()).await
    }
}

/// Decode an error answer into a `Status` (or make one from the HTTP code).
pub fn status_from(code: StatusCode, bytes: &[u8]) -> Status {
    serde_json::from_slice::<Status>(bytes)
        .ok()
        .filter(|s| s.kind == "Status")
        .unwrap_or_else(|| {
            Status::failure(
                code.as_u16(),
                code.canonical_reason().unwrap_or("Error"),
                format!(
                    "the server answered {code}: {}",
                    String::from_utf8_lossy(bytes).trim()
                ),
            )
        })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

fn tls_config(ca_pem: Option<&[u8]>, insecure: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if insecure {
        return Err("insecure-skip-tls-verify is not supported by bramble; use the CA in the master's admin kubeconfig".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    let pem = ca_pem.ok_or(
        "the cluster has no certificate-authority(-data); use the master's admin kubeconfig",
    )?;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| format!("certificate authority is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate authority is unusable: {e}"))?;
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

//! The master's credentials, made on first start: a CA, a serving
//! certificate signed by it, an admin bearer token and an admin kubeconfig.
//!
//! Files live under `{data-dir}/pki/` (keys and the token hash mode 0600) and
//! `{data-dir}/admin.kubeconfig` (mode 0600). Certificates are valid from 1975
//! to 4096 (rcgen's defaults): a Raspberry Pi has no real-time clock and may
//! boot with a clock years off, and an expired serving certificate on a device
//! nobody can reach is worse than a long-lived one; rotation comes later.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Errors while creating or loading credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A stored certificate or key could not be used.
    #[error("{path}: {reason}; move the pki directory away to make new credentials (clients then need the new kubeconfig)")]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The credentials the API server runs with.
pub struct Credentials {
    /// TLS configuration with the serving certificate.
    pub tls: Arc<rustls::ServerConfig>,
    /// SHA-256 of the admin bearer token.
    pub admin_token_sha256: [u8; 32],
    /// Path of the admin kubeconfig.
    pub kubeconfig_path: PathBuf,
}

/// What to put into the serving certificate and kubeconfig.
pub struct PkiOptions {
    /// Extra names and addresses for the serving certificate.
    pub extra_sans: Vec<String>,
    /// The URL written into the admin kubeconfig (`https://127.0.0.1:6443`).
    pub server_url: String,
    /// The cluster name (kubeconfig cluster and context name).
    pub cluster_name: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `contents` to `path` atomically with the given mode.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Hash a bearer token the way the master stores it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: 32 bytes as lowercase hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Load the credentials from `data_dir`, creating them on first start.
pub fn load_or_create(data_dir: &Path, options: &PkiOptions) -> Result<Credentials, PkiError> {
    let pki = data_dir.join("pki");
    fs::create_dir_all(&pki).map_err(io_err(&pki))?;
    let ca_cert_path = pki.join("ca.crt");
    let ca_key_path = pki.join("ca.key");
    let server_cert_path = pki.join("server.crt");
    let server_key_path = pki.join("server.key");
    let token_hash_path = pki.join("admin-token.sha256");
    let kubeconfig_path = data_dir.join("admin.kubeconfig");

    if !ca_cert_path.exists() {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{}-ca", options.cluster_name),
        );
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let mut sans = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "bramble-master".to_string(),
        ];
        if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
            let host = host.trim().to_string();
            if !host.is_empty() && !sans.contains(&host) {
                sans.push(host);
            }
        }
        for san in &options.extra_sans {
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        let server_key = rcgen::KeyPair::generate()?;
        let mut server_params = rcgen::CertificateParams::new(sans)?;
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bramble-master");
        server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca_cert, &ca_key)?;

        let token = new_token();
        write_file_atomic(&ca_key_path, ca_key.serialize_pem().as_bytes(), 0o600)?;
        write_file_atomic(
            &server_key_path,
            server_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file_atomic(&server_cert_path, server_cert.pem().as_bytes(), 0o644)?;
        write_file_atomic(
            &token_hash_path,
            hex(&token_sha256(&token)).as_bytes(),
            0o600,
        )?;
        let kubeconfig = render_kubeconfig(options, ca_cert.pem().as_bytes(), &token);
        write_file_atomic(&kubeconfig_path, kubeconfig.as_bytes(), 0o600)?;
        // The CA certificate is written last: its presence marks a complete set.
        write_file_atomic(&ca_cert_path, ca_cert.pem().as_bytes(), 0o644)?;
        tracing::info!(kubeconfig = %kubeconfig_path.display(), "created CA, serving certificate and admin kubeconfig");
    }

    point_kubeconfig_at(&kubeconfig_path, &options.server_url)?;
    let tls = load_tls(&server_cert_path, &server_key_path)?;
    let hash_text = fs::read_to_string(&token_hash_path).map_err(io_err(&token_hash_path))?;
    let admin_token_sha256 = unhex(hash_text.trim()).ok_or_else(|| PkiError::Invalid {
        path: token_hash_path.clone(),
        reason: "not a SHA-256 hex digest".into(),
    })?;
    Ok(Credentials {
        tls,
        admin_token_sha256,
        kubeconfig_path,
    })
}

/// Keep the admin kubeconfig's `server:` in step with the address the master
/// listens on now (the port may differ between starts, e.g. with port 0).
fn point_kubeconfig_at(path: &Path, server_url: &str) -> Result<(), PkiError> {
    let Ok(text) = fs::read_to_string(path) else {
        // The user may have moved the kubeconfig away; nothing to update.
        return Ok(());
    };
    let wanted = format!("    server: {server_url}");
    if text.lines().any(|l| l == wanted) {
        return Ok(());
    }
    let updated: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("    server: ") {
                wanted.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    write_file_atomic(path, (updated.join("\n") + "\n").as_bytes(), 0o600)
}

fn load_tls(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let cert_pem = fs::read(cert_path).map_err(io_err(cert_path))?;
    let key_pem = fs::read(key_path).map_err(io_err(key_path))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| PkiError::Invalid {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| PkiError::Invalid {
            path: key_path.to_path_buf(),
            reason: "no private key found".into(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Invalid {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| PkiError::Invalid {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn render_kubeconfig(options: &PkiOptions, ca_pem: &[u8], token: &str) -> String {
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let name = &options.cluster_name;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    certificate-authority-data: {ca_b64}\n    server: {server}\nusers:\n- name: {name}-admin\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\ncurrent-context: {name}\npreferences: {{}}\n",
        server = options.server_url
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reloads_the_same_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = PkiOptions {
            extra_sans: vec!["10.0.0.5".into()],
            server_url: "https://127.0.0.1:6443".into(),
            cluster_name: "bramble".into(),
        };
        let first = load_or_create(dir.path(), &options).expect("create");
        let kubeconfig = fs::read_to_string(&first.kubeconfig_path).expect("kubeconfig");
        let mode = fs::metadata(&first.kubeconfig_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token line");
        assert_eq!(token_sha256(token), first.admin_token_sha256);
        let second = load_or_create(dir.path(), &options).expect("reload");
        assert_eq!(first.admin_token_sha256, second.admin_token_sha256);
        assert_eq!(
            fs::read_to_string(&second.kubeconfig_path).expect("read"),
            kubeconfig
        );
        let moved = PkiOptions {
            server_url: "https://127.0.0.1:7000".into(),
            ..options
        };
        let third = load_or_create(dir.path(), &moved).expect("reload on another port");
        let text = fs::read_to_string(&third.kubeconfig_path).expect("read");
        assert!(
            text.contains("    server: https://127.0.0.1:7000\n"),
            "{text}"
        );
        assert!(text.contains(token), "the token must survive the rewrite");
    }
}

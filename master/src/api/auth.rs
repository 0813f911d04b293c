//! Bearer-token authentication. Tokens are kept only as SHA-256 digests and
//! compared in constant time.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// Checks the `Authorization: Bearer` header of requests.
pub struct Authenticator {
    admin_token_sha256: [u8; 32],
}

impl Authenticator {
    /// An authenticator accepting the admin token with this digest.
    pub fn new(admin_token_sha256: [u8; 32]) -> Self {
        Authenticator { admin_token_sha256 }
    }

    /// True when the request carries a valid token.
    pub fn is_authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        constant_time_eq(&digest, &self.admin_token_sha256)
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_right_bearer_token() {
        let auth = Authenticator::new(Sha256::digest(b"secret").into());
        let mut headers = HeaderMap::new();
        assert!(!auth.is_authorized(&headers));
        headers.insert("authorization", "Bearer wrong".parse().expect("header"));
        assert!(!auth.is_authorized(&headers));
        headers.insert("authorization", "Basic secret".parse().expect("header"));
        assert!(!auth.is_authorized(&headers));
        headers.insert("authorization", "Bearer secret".parse().expect("header"));
        assert!(auth.is_authorized(&headers));
    }
}

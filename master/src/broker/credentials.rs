//! Who may connect to the broker: user name to SHA-256 of the token.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

/// The table of MQTT users, shared by the broker's login check and the
/// master's node registry. Tokens are held only as SHA-256 digests.
#[derive(Debug, Default)]
pub struct Credentials {
    users: RwLock<HashMap<String, [u8; 32]>>,
}

impl Credentials {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow `user` with the token whose digest is `token_sha256`.
    pub fn allow(&self, user: &str, token_sha256: [u8; 32]) {
        if let Ok(mut users) = self.users.write() {
            users.insert(user.to_string(), token_sha256);
        }
    }

    /// Refuse `user` from now on.
    pub fn revoke(&self, user: &str) {
        if let Ok(mut users) = self.users.write() {
            users.remove(user);
        }
    }

    /// Replace every user except the ones in `keep` with `users`.
    pub fn replace_all(&self, users: HashMap<String, [u8; 32]>, keep: &[&str]) {
        if let Ok(mut table) = self.users.write() {
            table.retain(|name, _| keep.contains(&name.as_str()));
            table.extend(users);
        }
    }

    /// True when `token` is the token of `user` (constant-time compare).
    pub fn check(&self, user: &str, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Ok(users) = self.users.read() else {
            return false;
        };
        users.get(user).is_some_and(|expected| {
            expected
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_tokens_and_revocation() {
        let table = Credentials::new();
        table.allow("pi-1", Sha256::digest(b"t1").into());
        assert!(table.check("pi-1", "t1"));
        assert!(!table.check("pi-1", "t2"));
        assert!(!table.check("pi-2", "t1"));
        table.revoke("pi-1");
        assert!(!table.check("pi-1", "t1"));
        table.allow("master", Sha256::digest(b"m").into());
        table.allow("pi-3", Sha256::digest(b"t3").into());
        table.replace_all(
            HashMap::from([("pi-4".to_string(), Sha256::digest(b"t4").into())]),
            &["master"],
        );
        assert!(
            table.check("master", "m") && table.check("pi-4", "t4") && !table.check("pi-3", "t3")
        );
    }
}

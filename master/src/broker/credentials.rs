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

/// The user name the master itself uses on the embedded broker.
pub const MASTER_USER: &str = "bramble-master";

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The node tokens stored in the store (Secrets of type
/// `bramble.io/node-token` in `kube-system`), as user → digest.
pub async fn node_tokens(
    store: &crate::store::Store,
) -> Result<HashMap<String, [u8; 32]>, crate::store::StoreError> {
    use crate::api::nodes::{TOKEN_HASH_KEY, TOKEN_NAMESPACE, TOKEN_NODE_KEY, TOKEN_SECRET_TYPE};
    use base64::Engine;
    let (secrets, _) = store
        .list(bramble_common::Kind::Secret, Some(TOKEN_NAMESPACE))
        .await?;
    let b64 = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    Ok(secrets
        .iter()
        .filter(|s| s["type"] == TOKEN_SECRET_TYPE)
        .filter_map(|s| {
            let node = b64(&s["data"][TOKEN_NODE_KEY])?;
            let hash = decode_hex(&b64(&s["data"][TOKEN_HASH_KEY])?)?;
            Some((node, hash))
        })
        .collect())
}

/// Keep `credentials` in step with the node tokens in the store until
/// `shutdown`. `on_revoked` is called with each node whose token went away
/// (to disconnect the device).
pub async fn keep_in_step(
    store: crate::store::Store,
    credentials: std::sync::Arc<Credentials>,
    on_revoked: impl Fn(String) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut known: HashMap<String, [u8; 32]> = node_tokens(&store).await.unwrap_or_default();
    loop {
        let mut watch = match store.watch(
            Some(bramble_common::Kind::Secret),
            Some(crate::api::nodes::TOKEN_NAMESPACE),
            store.current_revision(),
        ) {
            Ok(w) => w,
            Err(error) => {
                tracing::warn!(%error, "cannot watch node tokens; retrying");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        loop {
            let event = tokio::select! {
                e = watch.next() => e,
                () = &mut shutdown => return,
            };
            if event.is_none() {
                break;
            }
            let Ok(tokens) = node_tokens(&store).await else {
                continue;
            };
            for node in known.keys().filter(|n| !tokens.contains_key(*n)) {
                on_revoked(node.clone());
            }
            credentials.replace_all(tokens.clone(), &[MASTER_USER]);
            known = tokens;
        }
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

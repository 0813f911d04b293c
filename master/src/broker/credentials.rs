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

/// The node and token digest a Secret holds, if it is a node token
/// (type `bramble.io/node-token` in `kube-system`).
fn token_of(secret: &serde_json::Value) -> Option<(String, [u8; 32])> {
    use crate::api::nodes::{TOKEN_HASH_KEY, TOKEN_NAMESPACE, TOKEN_NODE_KEY, TOKEN_SECRET_TYPE};
    use base64::Engine;
    if secret["type"] != TOKEN_SECRET_TYPE || secret["metadata"]["namespace"] != TOKEN_NAMESPACE {
        return None;
    }
    let b64 = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    let node = b64(&secret["data"][TOKEN_NODE_KEY])?;
    let hash = decode_hex(&b64(&secret["data"][TOKEN_HASH_KEY])?)?;
    Some((node, hash))
}

/// The node tokens stored in the store (Secrets of type
/// `bramble.io/node-token` in `kube-system`), as user → digest.
pub async fn node_tokens(
    store: &crate::store::Store,
) -> Result<HashMap<String, [u8; 32]>, crate::store::StoreError> {
    Ok(token_secrets(store).await?.into_values().collect())
}

/// The node tokens by the name of the Secret holding each.
async fn token_secrets(
    store: &crate::store::Store,
) -> Result<HashMap<String, (String, [u8; 32])>, crate::store::StoreError> {
    let (secrets, _) = store
        .list(
            bramble_common::Kind::Secret,
            Some(crate::api::nodes::TOKEN_NAMESPACE),
        )
        .await?;
    Ok(secrets
        .iter()
        .filter_map(|s| {
            let name = s["metadata"]["name"].as_str()?.to_string();
            Some((name, token_of(s)?))
        })
        .collect())
}

/// Keep `credentials` in step with the node tokens in the store until
/// `shutdown`. `on_revoked` is called with each node whose token went away
/// (to disconnect the device). Each change is applied from its watch event
/// (registering N nodes costs N updates, not N listings of N tokens); the
/// tokens are listed again only when the watch has to start over.
pub async fn keep_in_step(
    store: crate::store::Store,
    credentials: std::sync::Arc<Credentials>,
    on_revoked: impl Fn(String) + Send + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // Secret name → (node, digest) as last applied.
    let mut known: HashMap<String, (String, [u8; 32])> = HashMap::new();
    let mut first = true;
    loop {
        // Watch first, then list: nothing falls between them.
        let watch = store.watch(
            Some(bramble_common::Kind::Secret),
            Some(crate::api::nodes::TOKEN_NAMESPACE),
            0,
        );
        let listed = token_secrets(&store).await;
        let (mut watch, listed) = match (watch, listed) {
            (Ok(w), Ok(l)) => (w, l),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot watch node tokens; retrying");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        if !first {
            let now: std::collections::HashSet<&String> = listed.values().map(|(n, _)| n).collect();
            for (node, _) in known.values().filter(|(n, _)| !now.contains(n)) {
                on_revoked(node.clone());
            }
        }
        first = false;
        credentials.replace_all(listed.values().cloned().collect(), &[MASTER_USER]);
        known = listed;
        loop {
            let event = tokio::select! {
                e = watch.next() => e,
                () = &mut shutdown => return,
            };
            let Some(event) = event else {
                break;
            };
            let name = event.key.name.clone();
            let token = match event.event_type {
                crate::store::EventType::Deleted => None,
                _ => token_of(&event.object),
            };
            match token {
                Some((node, hash)) => {
                    if let Some((old, _)) = known.get(&name).filter(|(old, _)| *old != node) {
                        credentials.revoke(old);
                    }
                    credentials.allow(&node, hash);
                    known.insert(name, (node, hash));
                }
                None => {
                    if let Some((node, _)) = known.remove(&name) {
                        credentials.revoke(&node);
                        on_revoked(node);
                    }
                }
            }
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

//! `bramble master --local-agent`: run an agent on the master's own machine,
//! as `k3s server` does, so one command gives a working single-node cluster.
//!
//! The agent binary is `bramble-agent` next to `bramble` (or `--agent-bin`).
//! Its node is registered like any other (`bramble node add`) on first start;
//! its token is rotated at every master start and handed to the child only.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine;
use bramble_common::Kind;
use serde_json::json;

use crate::api::{nodes, pki};
use crate::store::{ObjectKey, Precondition, Store};

/// How to run the local agent.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    /// The agent binary.
    pub binary: PathBuf,
    /// The node's name.
    pub node: String,
    /// `real` or `sim`.
    pub runtime: String,
    /// The agent's state dir.
    pub state_dir: PathBuf,
}

/// The default agent binary: `bramble-agent` beside this executable.
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bramble-agent")))
        .unwrap_or_else(|| PathBuf::from("bramble-agent"))
}

/// This machine's host name, as a node name.
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| "local".into())
}

/// Register the local node if needed and give it a fresh token.
async fn fresh_token(store: &Store, node: &str) -> Result<String, String> {
    let node_key = ObjectKey {
        kind: Kind::Node,
        namespace: String::new(),
        name: node.to_string(),
    };
    if store
        .get(&node_key)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let (existing, _) = store
            .list(Kind::Node, None)
            .await
            .map_err(|e| e.to_string())?;
        let used: Vec<String> = existing
            .iter()
            .filter_map(|n| n["spec"]["podCIDR"].as_str().map(str::to_string))
            .collect();
        let pool = nodes::PodCidrPool::default();
        let cidr = (0..=255u8)
            .map(|i| pool.cidr(i))
            .find(|c| !used.contains(c))
            .ok_or("every pod CIDR is taken")?;
        let object = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        store
            .create(&node_key, object)
            .await
            .map_err(|e| e.to_string())?;
    }
    let token = pki::new_token();
    let hash: String = pki::token_sha256(&token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let secret_key = ObjectKey {
        kind: Kind::Secret,
        namespace: nodes::TOKEN_NAMESPACE.into(),
        name: nodes::token_secret_name(node),
    };
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": nodes::token_secret_name(node), "namespace": nodes::TOKEN_NAMESPACE, "labels": {"bramble.io/node": node}},
        "type": nodes::TOKEN_SECRET_TYPE,
        "data": {nodes::TOKEN_NODE_KEY: b64(node), nodes::TOKEN_HASH_KEY: b64(&hash)},
    });
    match store.get(&secret_key).await.map_err(|e| e.to_string())? {
        Some(_) => store
            .update(&secret_key, secret, Precondition::default())
            .await
            .map_err(|e| e.to_string())?,
        None => store
            .create(&secret_key, secret)
            .await
            .map_err(|e| e.to_string())?,
    };
    Ok(token)
}

/// Start the local agent and keep it running until `stopped`; it is
/// restarted (after a pause) if it exits.
pub async fn run(
    agent: LocalAgent,
    store: Store,
    mqtt_port: u16,
    cluster: String,
    credentials: Option<std::sync::Arc<crate::broker::Credentials>>,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    if !Path::new(&agent.binary).exists() {
        tracing::error!(binary = %agent.binary.display(), "--local-agent: the agent binary was not found; build it (cargo build -p bramble-agent) or pass --agent-bin");
        return;
    }
    let token = match fresh_token(&store, &agent.node).await {
        Ok(t) => t,
        Err(error) => {
            tracing::error!(%error, "--local-agent: cannot register the local node");
            return;
        }
    };
    if let Some(credentials) = &credentials {
        // Do not wait for the token watcher: the child connects at once.
        credentials.allow(&agent.node, pki::token_sha256(&token));
    }
    loop {
        let mut child = match tokio::process::Command::new(&agent.binary)
            .arg("--master")
            .arg(format!("mqtt://127.0.0.1:{mqtt_port}"))
            .arg("--cluster")
            .arg(&cluster)
            .arg("--node")
            .arg(&agent.node)
            .arg("--token")
            .arg(&token)
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .arg("--runtime")
            .arg(&agent.runtime)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, binary = %agent.binary.display(), "--local-agent: cannot start the agent");
                return;
            }
        };
        tracing::info!(node = %agent.node, runtime = %agent.runtime, "local agent started");
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(?status, "local agent exited; restarting it in 5 s");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    () = &mut stopped => return,
                }
            }
            () = &mut stopped => {
                if let Some(pid) = child.id() {
                    // SIGTERM: the agent says goodbye (Offline presence); containers keep running.
                    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
                }
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
                return;
            }
        }
    }
}

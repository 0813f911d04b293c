//! `bramble master --local-agent`: run an agent on the master's own machine,
//! as `k3s server` does, so one command gives a working single-node cluster.
//!
//! The agent binary is `bramble-agent` next to `bramble` (or `--agent-bin`).
//! Its node is registered like any other (`bramble node add`) on first start;
//! its token is rotated at every master start and handed to the child only.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bramble_common::Kind;

use crate::api::pod_cidr::PodCidrPool;
use crate::api::{nodes, pki};
use crate::store::{ObjectKey, Store};

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
async fn fresh_token(store: &Store, pool: &PodCidrPool, node: &str) -> Result<String, String> {
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
        let cidr = nodes::free_pod_cidrs(store, pool, 1)
            .await
            .map_err(|e| e.0.message)?
            .pop()
            .ok_or("no pod CIDR")?;
        let object = nodes::node_object(
            node,
            &cidr,
            &[("node-role.kubernetes.io/control-plane", "")],
        );
        store
            .create(&node_key, object)
            .await
            .map_err(|e| e.to_string())?;
    }
    let token = pki::new_token();
    nodes::set_token(store, node, &token)
        .await
        .map_err(|e| e.0.message)?;
    Ok(token)
}

/// Start the local agent and keep it running until `stopped`; it is
/// restarted (after a pause) if it exits. `mqtt` is the broker's
/// `host:port` as the master itself reaches it.
pub async fn run(
    agent: LocalAgent,
    store: Store,
    mqtt: String,
    cluster: String,
    pod_cidrs: PodCidrPool,
    credentials: Option<std::sync::Arc<crate::broker::Credentials>>,
    stopped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stopped);
    if !Path::new(&agent.binary).exists() {
        tracing::error!(binary = %agent.binary.display(), "--local-agent: the agent binary was not found; build it (cargo build -p bramble-agent) or pass --agent-bin");
        return;
    }
    let token = match fresh_token(&store, &pod_cidrs, &agent.node).await {
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
            .arg(format!("mqtt://{mqtt}"))
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

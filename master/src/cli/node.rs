//! `bramble node add` and `bramble node rm`: register devices and revoke them.

use std::path::Path;
use std::process::ExitCode;

use hyper::Method;
use serde_json::json;

use super::client::{Client, ClientError};

/// `bramble node` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Register a node (or `--count N --prefix P` nodes) and print `NAME TOKEN` per node; tokens are shown only once.
    Add {
        /// The node's name (omit with --count).
        name: Option<String>,
        /// Register this many nodes named PREFIX1..PREFIXN.
        #[arg(long, requires = "prefix")]
        count: Option<u32>,
        /// Name prefix for --count (e.g. `pi-`).
        #[arg(long)]
        prefix: Option<String>,
        /// The MQTT address agents should use, for the printed join command.
        #[arg(long, default_value = "mqtt://MASTER:1883")]
        master_url: String,
    },
    /// Revoke a node's token, disconnect it and remove the node.
    Rm {
        /// Names of the nodes.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Run a `bramble node` subcommand.
pub async fn run(kubeconfig: Option<&Path>, command: NodeCommand) -> Result<ExitCode, ClientError> {
    let client = Client::from_kubeconfig(kubeconfig)?;
    match command {
        NodeCommand::Add {
            name,
            count,
            prefix,
            master_url,
        } => {
            let names: Vec<String> = match (name, count, prefix) {
                (Some(name), None, None) => vec![name],
                (None, Some(count), Some(prefix)) if count > 0 => {
                    (1..=count).map(|i| format!("{prefix}{i}")).collect()
                }
                _ => {
                    return Err(ClientError::Config(
                        "give a node name, or --count N --prefix PREFIX (N at least 1)".into(),
                    ))
                }
            };
            let body = serde_json::to_vec(&json!({"names": names})).unwrap_or_default();
            let answer = match client
                .json(
                    Method::POST,
                    "/bramble/v1/nodes",
                    Some("application/json"),
                    None,
                    body,
                )
                .await
            {
                Ok(a) => a,
                Err(ClientError::Api(status)) => {
                    eprintln!("Error from server ({}): {}", status.reason, status.message);
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e),
            };
            let nodes = answer["nodes"].as_array().cloned().unwrap_or_default();
            for node in &nodes {
                println!(
                    "{} {}",
                    node["name"].as_str().unwrap_or(""),
                    node["token"].as_str().unwrap_or("")
                );
            }
            if let [node] = nodes.as_slice() {
                eprintln!(
                    "node {} registered (pod CIDR {}); its token is shown only now. On the device run:\n  bramble-agent --master {master_url} --node {} --token {}",
                    node["name"].as_str().unwrap_or(""),
                    node["podCIDR"].as_str().unwrap_or(""),
                    node["name"].as_str().unwrap_or(""),
                    node["token"].as_str().unwrap_or("")
                );
            } else {
                eprintln!(
                    "{} nodes registered; their tokens are shown only now (NAME TOKEN per line).",
                    nodes.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Rm { names } => {
            let mut failed = false;
            for name in names {
                match client
                    .json(
                        Method::DELETE,
                        &format!("/bramble/v1/nodes/{name}"),
                        None,
                        None,
                        Vec::new(),
                    )
                    .await
                {
                    Ok(_) => println!("node \"{name}\" removed; its token is revoked"),
                    Err(ClientError::Api(status)) => {
                        eprintln!("Error from server ({}): {}", status.reason, status.message);
                        failed = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

//! `bramble logs POD [-c NAME] [-f] [--tail N] [--previous]`: a container's
//! log, fetched by the master from the pod's node (the same endpoint as
//! `kubectl logs`), written to stdout as it arrives.

use std::io::Write;
use std::process::ExitCode;

use http_body_util::BodyExt;
use hyper::Method;

use super::client::{Client, ClientError};
use super::NamespaceArgs;

/// `bramble logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's only one, or the one named by its
    /// `kubectl.kubernetes.io/default-container` annotation).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming what the container writes, until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// The log of the container's previous run (after a restart).
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Prefix each line with its time (RFC 3339).
    #[arg(long)]
    pub timestamps: bool,
    /// Only lines newer than this (e.g. 30s, 5m, 2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Namespace.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
}

/// Parse `30s`, `5m`, `2h` (or plain seconds) into seconds.
fn since_seconds(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("--since {text:?}: expected a duration such as 30s, 5m or 2h"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("--since {text:?}: the unit must be s, m or h")),
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(format!("--since {text:?}: must be at least 1s")),
        Some(seconds) => Ok(seconds),
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The API path of the request `args` describe, for `namespace`.
pub fn log_path(args: &LogsArgs, namespace: &str) -> Result<String, String> {
    let mut query = Vec::new();
    if let Some(container) = &args.container {
        query.push(format!("container={}", encode(container)));
    }
    if args.follow {
        query.push("follow=true".into());
    }
    if args.previous {
        query.push("previous=true".into());
    }
    if args.timestamps {
        query.push("timestamps=true".into());
    }
    match args.tail {
        -1 => {}
        n if n < 0 => return Err(format!("--tail {n}: use -1 for all lines, or 0 and up")),
        n => query.push(format!("tailLines={n}")),
    }
    if let Some(since) = &args.since {
        query.push(format!("sinceSeconds={}", since_seconds(since)?));
    }
    let mut path = format!(
        "/api/v1/namespaces/{}/pods/{}/log",
        encode(namespace),
        encode(&args.pod)
    );
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    Ok(path)
}

/// Run `bramble logs`.
pub async fn run(
    kubeconfig: Option<&std::path::Path>,
    args: LogsArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::from_kubeconfig(kubeconfig)?;
    let namespace = args
        .namespace
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());
    let path = match log_path(&args, &namespace) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let (status, mut body) = client
        .send(Method::GET, &path, None, Some("*/*"), Vec::new())
        .await?;
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let status = super::client::status_from(status, &bytes);
        eprintln!("Error from server ({}): {}", status.reason, status.message);
        return Ok(ExitCode::FAILURE);
    }
    let mut stdout = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Unreachable {
            server: client.server().to_string(),
            reason: e.to_string(),
        })?;
        if let Ok(data) = frame.into_data() {
            if stdout
                .write_all(&data)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // The reader went away (`| head`): stop quietly.
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        logs: LogsArgs,
    }

    fn path(args: &[&str]) -> Result<String, String> {
        let cli = Cli::try_parse_from(std::iter::once("logs").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        log_path(&cli.logs, "default")
    }

    #[test]
    fn flags_become_the_kubernetes_query() {
        assert_eq!(
            path(&["web"]).unwrap(),
            "/api/v1/namespaces/default/pods/web/log"
        );
        assert_eq!(
            path(&["web", "-c", "app", "-f", "--tail", "5", "--previous", "--timestamps", "--since", "2m"]).unwrap(),
            "/api/v1/namespaces/default/pods/web/log?container=app&follow=true&previous=true&timestamps=true&tailLines=5&sinceSeconds=120"
        );
        assert!(path(&["web", "--tail", "-2"])
            .unwrap_err()
            .contains("--tail -2"));
        assert!(path(&["web", "--since", "5d"])
            .unwrap_err()
            .contains("unit"));
        assert!(path(&["web", "--since", "0s"])
            .unwrap_err()
            .contains("at least"));
    }
}

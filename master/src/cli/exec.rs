//! `bramble exec POD [-c NAME] [-i] [-t] -- CMD...`: run a command in a
//! container through the master, as `kubectl exec` does: the same
//! `pods/exec` endpoint and WebSocket protocol (`v5.channel.k8s.io`), the
//! command's exit code as bramble's. With `-t` the command gets a terminal
//! on the node; the local terminal is left as it is (line by line).

use std::process::ExitCode;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Client, ClientError};
use super::NamespaceArgs;

/// `bramble exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's only one, or its default-container
    /// annotation's).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Run the command on a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// Namespace.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
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

/// The API path of `args` for `namespace`.
pub fn exec_path(args: &ExecArgs, namespace: &str) -> String {
    let mut query: Vec<String> = args
        .command
        .iter()
        .map(|c| format!("command={}", encode(c)))
        .collect();
    if let Some(container) = &args.container {
        query.push(format!("container={}", encode(container)));
    }
    query.push(format!("stdin={}", args.stdin));
    query.push("stdout=true".into());
    query.push(format!("stderr={}", !args.tty));
    query.push(format!("tty={}", args.tty));
    format!(
        "/api/v1/namespaces/{}/pods/{}/exec?{}",
        encode(namespace),
        encode(&args.pod),
        query.join("&")
    )
}

/// The exit code an error-channel `Status` means.
pub fn exit_code_of(status: &serde_json::Value) -> Result<u8, String> {
    if status["status"] == "Success" {
        return Ok(0);
    }
    if status["reason"] == "NonZeroExitCode" {
        let code = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str()?.parse::<i64>().ok())
            .unwrap_or(1);
        return Ok(u8::try_from(code.clamp(1, 255)).unwrap_or(1));
    }
    Err(status["message"]
        .as_str()
        .unwrap_or("the command failed")
        .to_string())
}

/// Run `bramble exec`.
pub async fn run(
    kubeconfig: Option<&std::path::Path>,
    args: ExecArgs,
) -> Result<ExitCode, ClientError> {
    let client = Client::from_kubeconfig(kubeconfig)?;
    let namespace = args
        .namespace
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());
    let key: [u8; 16] = rand::random();
    let headers = [
        ("connection", "Upgrade".to_string()),
        ("upgrade", "websocket".to_string()),
        ("sec-websocket-version", "13".to_string()),
        (
            "sec-websocket-key",
            base64::engine::general_purpose::STANDARD.encode(key),
        ),
        ("sec-websocket-protocol", "v5.channel.k8s.io".to_string()),
    ];
    let response = client
        .upgrade(&exec_path(&args, &namespace), &headers)
        .await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let status = super::client::status_from(code, &bytes);
        eprintln!("Error from server ({}): {}", status.reason, status.message);
        return Ok(ExitCode::FAILURE);
    }
    let upgraded = match hyper::upgrade::on(response).await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            eprintln!("error: the master did not upgrade the connection: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    let (mut sink, mut source) = socket.split();
    let mut stdin = tokio::io::stdin();
    let mut stdin_open = args.stdin;
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    loop {
        tokio::select! {
            read = stdin.read(&mut buf), if stdin_open => {
                let message = match read {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        vec![255, 0]
                    }
                    Ok(n) => {
                        let mut m = Vec::with_capacity(n + 1);
                        m.push(0);
                        m.extend_from_slice(&buf[..n]);
                        m
                    }
                };
                if sink.send(Message::Binary(message.into())).await.is_err() {
                    stdin_open = false;
                }
            }
            message = source.next() => {
                let data = match message {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Close(_))) | None => {
                        eprintln!("error: the stream ended before the command's exit status");
                        return Ok(ExitCode::FAILURE);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        eprintln!("error: the stream broke: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                };
                let Some((&channel, payload)) = data.split_first() else { continue };
                match channel {
                    1 => {
                        let _ = stdout.write_all(payload).await;
                        let _ = stdout.flush().await;
                    }
                    2 => {
                        let _ = stderr.write_all(payload).await;
                        let _ = stderr.flush().await;
                    }
                    3 => {
                        let _ = sink.send(Message::Close(None)).await;
                        let status: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                        return Ok(match exit_code_of(&status) {
                            Ok(0) => ExitCode::SUCCESS,
                            Ok(code) => {
                                eprintln!("command terminated with exit code {code}");
                                ExitCode::from(code)
                            }
                            Err(message) => {
                                eprintln!("error: {message}");
                                ExitCode::FAILURE
                            }
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn path_and_exit_codes() {
        let args = ExecArgs {
            pod: "box".into(),
            container: Some("main".into()),
            stdin: true,
            tty: false,
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            namespace: NamespaceArgs { namespace: None },
        };
        assert_eq!(
            exec_path(&args, "default"),
            "/api/v1/namespaces/default/pods/box/exec?command=sh&command=-c&command=exit%203&container=main&stdin=true&stdout=true&stderr=true&tty=false"
        );
        assert_eq!(exit_code_of(&json!({"status": "Success"})), Ok(0));
        assert_eq!(
            exit_code_of(&json!({"status": "Failure", "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})),
            Ok(3)
        );
        assert!(exit_code_of(&json!({"status": "Failure", "message": "boom"})).is_err());
    }
}

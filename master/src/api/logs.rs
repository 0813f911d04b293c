//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's log, fetched
//! from the pod's node over MQTT ([`crate::rpc`]) and streamed back as
//! plain text, with the query parameters of Kubernetes: `container`,
//! `follow`, `previous`, `tailLines`, `timestamps`, `sinceSeconds`,
//! `sinceTime`, `limitBytes`.
//!
//! The agent sends its log records as stored (CRI format:
//! `TIMESTAMP STREAM F|P MESSAGE`); [`LogFormatter`] turns them into what
//! kubelet serves: the messages, optionally prefixed with their timestamp,
//! lines split by the runtime (`P`) joined again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bramble_common::api::Pod;
use bramble_common::wire::RpcCall;
use bramble_common::Kind;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::ApiState;
use crate::rpc::RpcError;
use crate::store::ObjectKey;

/// How long the node has to start answering.
const FIRST_ANSWER: Duration = Duration::from_secs(10);
/// The annotation kubectl reads for the container to show by default.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// What a log request asks, from its query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// `container`.
    pub container: Option<String>,
    /// `follow`.
    pub follow: bool,
    /// `previous`.
    pub previous: bool,
    /// `tailLines`.
    pub tail_lines: Option<u64>,
    /// `timestamps`.
    pub timestamps: bool,
    /// `sinceSeconds` or `sinceTime`, as a point in time.
    pub since: Option<jiff::Timestamp>,
    /// `limitBytes`.
    pub limit_bytes: Option<u64>,
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("" | "true" | "1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: {other:?} is not a boolean (use true or false)"
        ))),
    }
}

fn number(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    query
        .get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name}: {v:?} is not a whole number")))
        })
        .transpose()
}

impl LogQuery {
    /// Read the query parameters, refusing values Kubernetes refuses.
    pub fn parse(query: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
        let tail_lines = match number(query, "tailLines")? {
            Some(n) if n < 0 => {
                return Err(ApiError::bad_request(
                    "tailLines: must be greater than or equal to 0",
                ))
            }
            other => other.map(|n| n.unsigned_abs()),
        };
        let limit_bytes = match number(query, "limitBytes")? {
            Some(n) if n < 1 => {
                return Err(ApiError::bad_request("limitBytes: must be greater than 0"))
            }
            other => other.map(|n| n.unsigned_abs()),
        };
        let since = match (number(query, "sinceSeconds")?, query.get("sinceTime")) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "at most one of sinceTime or sinceSeconds may be specified",
                ))
            }
            (Some(seconds), None) if seconds < 1 => {
                return Err(ApiError::bad_request(
                    "sinceSeconds: must be greater than 0",
                ))
            }
            (Some(seconds), None) => Some(
                jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_secs(seconds))
                    .map_err(|e| ApiError::bad_request(format!("sinceSeconds: {e}")))?,
            ),
            (None, Some(time)) => Some(time.parse::<jiff::Timestamp>().map_err(|e| {
                ApiError::bad_request(format!("sinceTime: {time:?} is not an RFC 3339 time: {e}"))
            })?),
            (None, None) => None,
        };
        Ok(LogQuery {
            container: query.get("container").filter(|c| !c.is_empty()).cloned(),
            follow: flag(query, "follow")?,
            previous: flag(query, "previous")?,
            tail_lines,
            timestamps: flag(query, "timestamps")?,
            since,
            limit_bytes,
        })
    }
}

/// The container a request means: the one named, else the pod's only one,
/// else the one the default-container annotation names.
pub fn choose_container(pod: &Pod, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let containers: Vec<&str> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let init: Vec<&str> = pod
        .spec
        .init_containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if let Some(asked) = asked {
        if containers.contains(&asked) || init.contains(&asked) {
            return Ok(asked.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        )));
    }
    if let [only] = containers.as_slice() {
        return Ok((*only).to_string());
    }
    let annotated = pod
        .metadata
        .annotations
        .get(DEFAULT_CONTAINER)
        .filter(|c| containers.contains(&c.as_str()));
    if let Some(container) = annotated {
        return Ok(container.clone());
    }
    let mut message = format!(
        "a container name must be specified for pod {name}, choose one of: [{}]",
        containers.join(" ")
    );
    if !init.is_empty() {
        message.push_str(&format!(
            " or one of the init containers: [{}]",
            init.join(" ")
        ));
    }
    Err(ApiError::bad_request(message))
}

/// Serve a log request.
pub async fn serve(
    state: &Arc<ApiState>,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let query = LogQuery::parse(query)?;
    let key = ObjectKey {
        kind: Kind::Pod,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let object = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let pod: Pod = serde_json::from_value(object)
        .map_err(|e| ApiError::internal(format!("the stored pod cannot be read: {e}")))?;
    let container = choose_container(&pod, name, query.container.as_deref())?;
    let Some(node) = pod.spec.node_name.clone().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let call = RpcCall::Logs {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        container,
        tail_lines: query.tail_lines,
        previous: query.previous,
        follow: query.follow,
        since_bytes: None,
    };
    let mut stream = state
        .rpc
        .call(&node, call, FIRST_ANSWER)
        .await
        .map_err(|e| match e {
            RpcError::Remote(message) => ApiError::bad_request(message),
            other => ApiError::service_unavailable(other.to_string()),
        })?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let mut formatter = LogFormatter::new(&query);
    tokio::spawn(async move {
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                () = tx.closed() => return,
            };
            let text = match chunk {
                Some(Ok(data)) => formatter.feed(&data),
                Some(Err(error)) => {
                    tracing::debug!(%error, "a log stream ended early");
                    formatter.finish()
                }
                None => formatter.finish(),
            };
            let end = formatter.limit_reached();
            if !text.is_empty() && tx.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
            if end || formatter.is_finished() {
                return;
            }
        }
    });
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Turns CRI log records into the text kubelet serves.
#[derive(Debug)]
pub struct LogFormatter {
    pending: Vec<u8>,
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    limit: Option<u64>,
    written: u64,
    /// The last record written was partial: the next one continues its line.
    in_line: bool,
    finished: bool,
}

impl LogFormatter {
    /// A formatter for `query`'s options.
    pub fn new(query: &LogQuery) -> LogFormatter {
        LogFormatter {
            pending: Vec::new(),
            timestamps: query.timestamps,
            since: query.since,
            limit: query.limit_bytes,
            written: 0,
            in_line: false,
            finished: false,
        }
    }

    /// Feed received bytes; returns the text of the records they complete.
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let record = self.pending[start..start + pos].to_vec();
            start += pos + 1;
            self.record(&record, &mut out);
        }
        self.pending.drain(..start);
        self.limited(out)
    }

    /// The end of the stream: what is left (a record cut short is shown as is).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.record(&rest, &mut out);
        }
        let out = self.limited(out);
        self.finished = true;
        out
    }

    /// True once the stream ended.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True once `limitBytes` were written.
    pub fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.written >= l)
    }

    fn limited(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        if let Some(limit) = self.limit {
            let left = limit.saturating_sub(self.written);
            out.truncate(usize::try_from(left).unwrap_or(usize::MAX));
        }
        self.written += out.len() as u64;
        out
    }

    fn record(&mut self, record: &[u8], out: &mut Vec<u8>) {
        let mut parts = record.splitn(4, |b| *b == b' ');
        let (Some(time), Some(_stream), Some(tag), message) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            // Not a CRI record: pass it through.
            out.extend_from_slice(record);
            out.push(b'\n');
            return;
        };
        let partial = tag == b"P";
        if tag != b"P" && tag != b"F" {
            out.extend_from_slice(record);
            out.push(b'\n');
            return;
        }
        let time_text = String::from_utf8_lossy(time);
        if let Some(since) = self.since {
            let before = time_text
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t < since);
            if before {
                self.in_line = partial;
                return;
            }
        }
        if self.timestamps && !self.in_line {
            out.extend_from_slice(time);
            out.push(b' ');
        }
        out.extend_from_slice(message.unwrap_or(b""));
        if !partial {
            out.push(b'\n');
        }
        self.in_line = partial;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn records_become_text_across_chunks() {
        let mut f = LogFormatter::new(&LogQuery::default());
        let mut text =
            f.feed(b"2024-05-01T10:00:00.000000001Z stdout F hello\n2024-05-01T10:00:01Z std");
        text.extend(f.feed(b"err P par\n2024-05-01T10:00:02Z stderr F tial\nnot a record"));
        text.extend(f.finish());
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "hello\npartial\nnot a record\n"
        );
        assert!(f.is_finished());
    }

    #[test]
    fn timestamps_since_and_limit() {
        let q = LogQuery {
            timestamps: true,
            since: Some("2024-05-01T10:00:01Z".parse().unwrap()),
            ..LogQuery::default()
        };
        let mut f = LogFormatter::new(&q);
        let text = f.feed(
            b"2024-05-01T10:00:00Z stdout F old\n2024-05-01T10:00:02Z stdout P new \n2024-05-01T10:00:03Z stdout F line\n",
        );
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2024-05-01T10:00:02Z new line\n"
        );

        let q = LogQuery {
            limit_bytes: Some(4),
            ..LogQuery::default()
        };
        let mut f = LogFormatter::new(&q);
        assert_eq!(f.feed(b"2024-05-01T10:00:00Z stdout F abc\n"), b"abc\n");
        assert!(f.limit_reached());
        assert!(f.feed(b"2024-05-01T10:00:00Z stdout F more\n").is_empty());
    }

    #[test]
    fn query_is_checked_like_kubernetes() {
        let q = LogQuery::parse(&query(&[
            ("container", "web"),
            ("follow", "true"),
            ("tailLines", "5"),
            ("previous", "false"),
        ]))
        .unwrap();
        assert_eq!(q.container.as_deref(), Some("web"));
        assert!(q.follow && !q.previous);
        assert_eq!(q.tail_lines, Some(5));
        for bad in [
            ("tailLines", "-1"),
            ("tailLines", "x"),
            ("limitBytes", "0"),
            ("follow", "maybe"),
            ("sinceSeconds", "0"),
            ("sinceTime", "yesterday"),
        ] {
            let error = LogQuery::parse(&query(&[bad])).unwrap_err();
            assert_eq!(error.0.code, 400, "{bad:?}");
            assert!(
                error.0.message.contains(bad.0),
                "{bad:?}: {}",
                error.0.message
            );
        }
        assert!(LogQuery::parse(&query(&[
            ("sinceSeconds", "5"),
            ("sinceTime", "2024-05-01T10:00:00Z")
        ]))
        .is_err());
    }

    fn pod(containers: &[&str], init: &[&str], default: Option<&str>) -> Pod {
        let mut value = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": containers.iter().map(|c| serde_json::json!({"name": c, "image": "i"})).collect::<Vec<_>>(),
                "initContainers": init.iter().map(|c| serde_json::json!({"name": c, "image": "i"})).collect::<Vec<_>>(),
            }
        });
        if let Some(d) = default {
            value["metadata"]["annotations"] = serde_json::json!({DEFAULT_CONTAINER: d});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn chooses_the_container_like_kubernetes() {
        assert_eq!(
            choose_container(&pod(&["a"], &[], None), "p", None).unwrap(),
            "a"
        );
        assert_eq!(
            choose_container(&pod(&["a", "b"], &["i"], None), "p", Some("i")).unwrap(),
            "i"
        );
        assert_eq!(
            choose_container(&pod(&["a", "b"], &[], Some("b")), "p", None).unwrap(),
            "b"
        );
        let error = choose_container(&pod(&["a", "b"], &["i"], None), "p", None).unwrap_err();
        assert_eq!(
            error.0.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let error = choose_container(&pod(&["a"], &[], None), "p", Some("zz")).unwrap_err();
        assert_eq!(error.0.message, "container zz is not valid for pod p");
    }
}

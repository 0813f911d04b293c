//! `?watch=true`: a stream of `{"type": ..., "object": ...}` lines.
//!
//! Without a `resourceVersion` (or with `0`) the stream starts with an ADDED
//! event for every current object, as Kubernetes does; with one it replays the
//! store's event log after that revision and continues live. A revision older
//! than the log is answered 410 Gone (reason `Expired`): the client re-lists.
//! A watcher that falls further behind than the log reaches gets an `ERROR`
//! event with the same 410 status before the stream ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bramble_common::table;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::handlers::{now_unix, wants_table, Filter};
use super::request::ResourceTarget;
use super::ApiState;

/// Longest a watch stays open when the client gives no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// A watch `ERROR` event line carrying `status`.
fn render_error(status: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Serve a watch on the target collection.
pub async fn serve(
    state: &Arc<ApiState>,
    target: &ResourceTarget,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let kind = target.kind;
    let filter = Filter::from_query(kind, query)?;
    let as_table = wants_table(headers);
    let as_protobuf =
        !as_table && super::protobuf::negotiate(headers) == super::protobuf::Format::Protobuf;
    let timeout = match query.get("timeoutSeconds").filter(|s| !s.is_empty()) {
        Some(s) => Duration::from_secs(s.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "timeoutSeconds: invalid value {s:?}: must be a whole number of seconds"
            ))
        })?),
        None => DEFAULT_TIMEOUT,
    };
    let since = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: invalid value {rv:?}: not a resource version of this cluster"
            ))
        })?),
    };
    let namespace = target.namespace.as_deref();
    let (initial, since) = match since {
        Some(rev) => (Vec::new(), rev),
        None => {
            let (objects, revision) = state.store.list(kind, namespace).await?;
            (objects, revision)
        }
    };
    let mut watch = state.store.watch(Some(kind), namespace, since)?;

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let render = |event_type: &str, object: &Value| -> Bytes {
            let object = if as_table {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                table::to_table(kind, &[object], &rv, now_unix())
            } else {
                if as_protobuf {
                    match super::protobuf::watch_frame(event_type, object) {
                        Ok(frame) => return Bytes::from(frame),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot encode a watch event as protobuf")
                        }
                    }
                }
                object.clone()
            };
            let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
                .unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        };
        for object in initial.iter().filter(|o| filter.matches(o)) {
            if tx.send(Ok(render("ADDED", object))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = watch.next() => {
                    let Some(event) = event else {
                        // The watcher fell further behind than the event log
                        // reaches (or the store shut down): say so the way
                        // Kubernetes does, so clients list again.
                        let status = bramble_common::meta::Status::failure(
                            410,
                            "Expired",
                            "the watch fell further behind than the event log reaches: list again and watch from the list's resourceVersion",
                        );
                        let line = match serde_json::to_value(&status) {
                            Ok(object) if as_protobuf => super::protobuf::watch_frame("ERROR", &object)
                                .map(Bytes::from)
                                .unwrap_or_default(),
                            Ok(object) => render_error(&object),
                            Err(_) => Bytes::new(),
                        };
                        let _ = tx.send(Ok(line)).await;
                        break;
                    };
                    if !filter.matches(&event.object) {
                        continue;
                    }
                    if tx.send(Ok(render(event.event_type.as_str(), &event.object))).await.is_err() {
                        break;
                    }
                }
                () = &mut deadline => break,
                () = tx.closed() => break,
            }
        }
    });
    Ok((
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            if as_protobuf {
                super::protobuf::WATCH_MEDIA_TYPE
            } else {
                "application/json"
            },
        )],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

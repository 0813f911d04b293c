//! Publishing desired states without waiting: dispatch hands over the
//! latest payload of a topic and goes on; one task publishes them in turn.
//! A topic whose earlier payload is still waiting has it replaced (the
//! desired state is the whole state, so only the latest matters): what
//! waits is at most one payload per node, however slow the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

/// Hands payloads to the publishing task. Dropping it stops the task.
#[derive(Debug)]
pub struct Publisher {
    waiting: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    topics: mpsc::UnboundedSender<String>,
}

impl Publisher {
    /// Starts the task that publishes through `client` (retained, QoS 1).
    pub fn start(client: AsyncClient) -> Publisher {
        let waiting: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let (topics, mut queue) = mpsc::unbounded_channel::<String>();
        let shared = waiting.clone();
        tokio::spawn(async move {
            while let Some(topic) = queue.recv().await {
                let payload = lock(&shared).remove(&topic);
                let Some(payload) = payload else {
                    continue;
                };
                let bytes = payload.len();
                match client
                    .publish(topic.clone(), QoS::AtLeastOnce, true, payload)
                    .await
                {
                    Ok(()) => tracing::debug!(%topic, bytes, "published"),
                    Err(error) => {
                        tracing::warn!(%topic, %error, "cannot publish; it is sent again on reconnect")
                    }
                }
            }
        });
        Publisher { waiting, topics }
    }

    /// Publishes `payload` on `topic` (retained), replacing one that is
    /// still waiting for the same topic.
    pub fn publish(&self, topic: String, payload: Vec<u8>) {
        let fresh = lock(&self.waiting).insert(topic.clone(), payload).is_none();
        if fresh {
            // The task ends only when this sender is dropped.
            let _ = self.topics.send(topic);
        }
    }

    /// Payloads waiting to be published.
    pub fn waiting(&self) -> usize {
        lock(&self.waiting).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

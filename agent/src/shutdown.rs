//! The shutdown signal: `main` owns a [`ShutdownTrigger`], every long-running
//! task gets a [`Shutdown`] and stops when it fires.

use tokio::sync::watch;

/// Fires the shutdown signal; dropping it fires it too.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A handle that tells a task when to stop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new shutdown signal: the trigger and a first handle.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Ask every task holding a [`Shutdown`] to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Another handle on this signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// True once shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Wait until shutdown is asked for (or the trigger is dropped).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone: stop as well.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_triggered_or_dropped() {
        let (trigger, mut a) = channel();
        let mut b = trigger.subscribe();
        assert!(!a.is_triggered());
        trigger.trigger();
        a.wait().await;
        assert!(b.is_triggered());
        b.wait().await;
        let (trigger, mut c) = channel();
        drop(trigger);
        c.wait().await;
    }
}

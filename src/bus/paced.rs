//! Paced delivery to the many: subscribers that come by the thousand (WebSocket
//! connections, subscription streams) do not each wait on the broadcast, whose
//! send would wake all of them at once. Tens of thousands of tasks woken together
//! overflow the runtime's local queues into its shared one, and whatever is woken
//! next (a write's next statement, an HTTP response) waits behind the whole
//! fan-out: with 10,000 subscribers and a stream of updates, a write waited
//! hundreds of milliseconds.
//!
//! Instead, one dispatcher task per bus hears each message and rings its
//! subscribers' doorbells a chunk at a time, yielding to the runtime between
//! chunks, so other work is never queued behind more than a chunk of deliveries.
//! Each subscriber still reads the broadcast ring itself (its own position, the
//! same bounded backlog, the same `Lagged` when it falls behind): the doorbell
//! only says when to look. The dispatcher never waits on a subscriber.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::Published;

/// Doorbells rung before the dispatcher lets the runtime run other tasks: the
/// most deliveries anything else waits behind (a few hundred microseconds).
const CHUNK: usize = 64;

/// One subscriber's doorbell.
#[derive(Default)]
struct Bell {
    notify: Notify,
    /// The subscriber is gone: the next snapshot leaves it out.
    gone: AtomicBool,
}

/// The doorbells of a bus's paced subscribers.
#[derive(Default)]
pub(crate) struct Pacer {
    bells: Mutex<Bells>,
    /// Started with the first paced subscriber (a runtime is at hand then).
    dispatcher: OnceLock<()>,
}

#[derive(Default)]
struct Bells {
    all: Vec<Arc<Bell>>,
    /// What the dispatcher rings, rebuilt from `all` after a change.
    snapshot: Option<Arc<[Arc<Bell>]>>,
}

impl Pacer {
    /// A paced receiver of everything sent on `sender` from now on.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        sender: &broadcast::Sender<Arc<Published>>,
    ) -> PacedReceiver {
        self.dispatcher.get_or_init(|| {
            tokio::spawn(dispatch(Arc::downgrade(self), sender.subscribe()));
        });
        let bell = Arc::new(Bell::default());
        {
            let mut bells = self.bells.lock().unwrap_or_else(|e| e.into_inner());
            bells.all.push(bell.clone());
            bells.snapshot = None;
        }
        PacedReceiver {
            receiver: sender.subscribe(),
            bell,
            pacer: self.clone(),
        }
    }

    /// The doorbells to ring now, the ones of subscribers gone left out.
    fn snapshot(&self) -> Arc<[Arc<Bell>]> {
        let mut bells = self.bells.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = &bells.snapshot {
            return snapshot.clone();
        }
        bells.all.retain(|bell| !bell.gone.load(Ordering::Relaxed));
        let snapshot: Arc<[Arc<Bell>]> = bells.all.as_slice().into();
        bells.snapshot = Some(snapshot.clone());
        snapshot
    }

    fn forget_snapshot(&self) {
        self.bells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot = None;
    }
}

/// Rings every doorbell for each message, a chunk at a time, until the bus closes
/// or the pacer is dropped.
async fn dispatch(
    pacer: std::sync::Weak<Pacer>,
    mut messages: broadcast::Receiver<Arc<Published>>,
) {
    loop {
        let closed = match messages.recv().await {
            // Several messages rung for at once: each subscriber reads all it has.
            Ok(_) => {
                while messages.try_recv().is_ok() {}
                false
            }
            // Each subscriber finds out for itself how far behind it is.
            Err(RecvError::Lagged(_)) => false,
            Err(RecvError::Closed) => true,
        };
        let Some(bells) = pacer.upgrade().map(|pacer| pacer.snapshot()) else {
            return;
        };
        for chunk in bells.chunks(CHUNK) {
            for bell in chunk {
                bell.notify.notify_one();
            }
            tokio::task::yield_now().await;
        }
        if closed {
            return;
        }
    }
}

/// A subscriber's end of a paced bus: the messages sent from its subscription on,
/// in order, as a broadcast receiver gives them.
pub struct PacedReceiver {
    receiver: broadcast::Receiver<Arc<Published>>,
    bell: Arc<Bell>,
    pacer: Arc<Pacer>,
}

impl PacedReceiver {
    /// The next message; `Lagged` when the subscriber fell further behind than the
    /// bus keeps, `Closed` when the bus is gone. Cancel safe: a message not yet
    /// returned stays in the ring.
    pub async fn recv(&mut self) -> Result<Arc<Published>, RecvError> {
        loop {
            match self.receiver.try_recv() {
                Ok(message) => return Ok(message),
                Err(TryRecvError::Lagged(missed)) => return Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                // A ring stored while nobody waited is kept as a permit, so a
                // message sent between the look and the wait is not slept through.
                Err(TryRecvError::Empty) => self.bell.notify.notified().await,
            }
        }
    }
}

impl Drop for PacedReceiver {
    fn drop(&mut self) {
        self.bell.gone.store(true, Ordering::Relaxed);
        self.pacer.forget_snapshot();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusMessage;

    fn message(n: usize) -> Arc<Published> {
        Published::new(BusMessage::ProjectChanged {
            project_id: n.to_string(),
        })
    }

    fn project(published: &Published) -> &str {
        match &published.message {
            BusMessage::ProjectChanged { project_id } => project_id,
            _ => "",
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_paced_subscriber_gets_every_message_in_order() {
        let (sender, _) = broadcast::channel(1024);
        let pacer = Arc::new(Pacer::default());
        let receivers: Vec<PacedReceiver> = (0..CHUNK * 3 + 5)
            .map(|_| pacer.subscribe(&sender))
            .collect();
        let tasks: Vec<_> = receivers
            .into_iter()
            .map(|mut receiver| {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for _ in 0..10 {
                        got.push(project(&receiver.recv().await.unwrap()).to_string());
                    }
                    got
                })
            })
            .collect();
        for n in 0..10 {
            assert!(sender.send(message(n)).is_ok());
        }
        let expected: Vec<String> = (0..10).map(|n| n.to_string()).collect();
        for task in tasks {
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("delivered")
                .unwrap();
            assert_eq!(got, expected);
        }
    }

    #[tokio::test]
    async fn a_subscriber_gone_is_rung_no_more_and_one_behind_learns_it() {
        let (sender, _) = broadcast::channel(4);
        let pacer = Arc::new(Pacer::default());
        let gone = pacer.subscribe(&sender);
        let mut behind = pacer.subscribe(&sender);
        drop(gone);
        assert_eq!(pacer.snapshot().len(), 1);
        for n in 0..6 {
            assert!(sender.send(message(n)).is_ok());
        }
        assert!(matches!(behind.recv().await, Err(RecvError::Lagged(2))));
        assert_eq!(project(&behind.recv().await.unwrap()), "2");
    }
}

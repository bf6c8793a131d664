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
//!
//! A fan-out rings and answers every doorbell once, so ringing takes no lock (a
//! flag and the subscriber's waker). Sends are counted as they are made, and a
//! subscriber that has read as many messages as were sent waits for its bell
//! without looking at the ring (looking at an empty broadcast ring locks the
//! channel's tail, which every subscriber shares). The count is the sender's,
//! not the dispatcher's: a subscriber woken for one message reads every message
//! sent since, even those the dispatcher, still ringing for an earlier one, has
//! not heard yet. Under a steady stream a dispatcher's round of 10,000 doorbells
//! takes about as long as the fan-out itself, and a subscriber that stopped at
//! what the dispatcher had heard received each event up to a round later.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use super::Published;

/// Doorbells rung before the dispatcher lets the runtime run other tasks: the
/// most deliveries anything else waits behind (a few hundred microseconds).
const CHUNK: usize = 64;

/// One subscriber's doorbell.
#[derive(Default)]
struct Bell {
    /// Rung since the subscriber last answered: kept, so a ring that comes
    /// between a look at the ring and the wait is not slept through.
    rung: AtomicBool,
    /// The subscriber's task while it waits.
    waker: AtomicWaker,
    /// The subscriber is gone: the next snapshot leaves it out.
    gone: AtomicBool,
}

impl Bell {
    fn ring(&self) {
        self.rung.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Resolves once the bell was rung since the last answer.
    fn answer(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.rung.swap(false, Ordering::SeqCst) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A ring between the look and the registration may have found no
            // waker to wake: look again.
            if self.rung.swap(false, Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// The doorbells of a bus's paced subscribers.
#[derive(Default)]
pub(crate) struct Pacer {
    bells: Mutex<Bells>,
    /// Messages sent on the bus: the position of its ring's tail.
    sent: AtomicU64,
    /// Held while a message is sent and counted, and while a subscriber takes
    /// the count it starts from with its place in the ring: so `sent` is never
    /// ahead of the ring, and a subscriber's count is exactly its place.
    sending: Mutex<()>,
    /// The bus closed: subscribers look at the ring and learn it.
    closed: AtomicBool,
    /// Started with the first paced subscriber (a runtime is at hand then).
    dispatcher: OnceLock<()>,
}

#[derive(Default)]
struct Bells {
    all: Vec<Arc<Bell>>,
    /// What the dispatcher rings, rebuilt from `all` after a change.
    snapshot: Option<Arc<[Arc<Bell>]>>,
    /// How many bells `all` may hold before the gone ones are dropped as a new
    /// one arrives: the dispatcher drops them only when it sends, and a quiet bus
    /// sends nothing while receivers come and go.
    prune_at: usize,
}

/// The fewest bells held before gone ones are dropped on arrival.
const PRUNE_AT_LEAST: usize = 1024;

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
            if bells.all.len() >= bells.prune_at.max(PRUNE_AT_LEAST) {
                bells.all.retain(|bell| !bell.gone.load(Ordering::Relaxed));
                // Twice what is live: each drop is paid for by as many arrivals.
                bells.prune_at = bells.all.len() * 2;
            }
            bells.all.push(bell.clone());
            bells.snapshot = None;
        }
        let (read, receiver) = {
            let _sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
            (self.sent.load(Ordering::SeqCst), sender.subscribe())
        };
        PacedReceiver {
            receiver,
            read,
            bell,
            pacer: self.clone(),
        }
    }

    /// Sends `message` to every receiver of `sender` and counts it; false when
    /// nobody listens (the message is then not in the ring).
    pub(crate) fn send(
        &self,
        sender: &broadcast::Sender<Arc<Published>>,
        message: Arc<Published>,
    ) -> bool {
        let _sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        let sent = sender.send(message).is_ok();
        if sent {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        sent
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
        // Each subscriber finds out for itself how far behind it is.
        let mut closed = match messages.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => false,
            Err(RecvError::Closed) => true,
        };
        // Several messages rung for at once: each subscriber reads all it has.
        while !closed {
            match messages.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Closed) => closed = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        let Some(pacer) = pacer.upgrade() else {
            return;
        };
        // Every message heard here is counted once its send has let go of
        // the lock: a subscriber rung for it finds it in the count.
        drop(pacer.sending.lock().unwrap_or_else(|e| e.into_inner()));
        if closed {
            pacer.closed.store(true, Ordering::SeqCst);
        }
        let bells = pacer.snapshot();
        drop(pacer);
        for chunk in bells.chunks(CHUNK) {
            for bell in chunk {
                bell.ring();
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
    /// This receiver's place in the ring, counted as sends are: while it is
    /// the count of sends, there is nothing new to read.
    read: u64,
    bell: Arc<Bell>,
    pacer: Arc<Pacer>,
}

impl PacedReceiver {
    /// The next message; `Lagged` when the subscriber fell further behind than the
    /// bus keeps, `Closed` when the bus is gone. Cancel safe: a message not yet
    /// returned stays in the ring.
    pub async fn recv(&mut self) -> Result<Arc<Published>, RecvError> {
        loop {
            // A send still counting is not seen yet: its bell rings after.
            if self.read < self.pacer.sent.load(Ordering::SeqCst)
                || self.pacer.closed.load(Ordering::SeqCst)
            {
                match self.receiver.try_recv() {
                    Ok(message) => {
                        self.read += 1;
                        return Ok(message);
                    }
                    Err(TryRecvError::Lagged(missed)) => {
                        self.read += missed;
                        return Err(RecvError::Lagged(missed));
                    }
                    Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                    Err(TryRecvError::Empty) => {}
                }
            }
            // A ring while nobody waited is kept, so a message sent between
            // the look and the wait is not slept through.
            self.bell.answer().await;
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

    #[tokio::test]
    async fn receivers_that_come_and_go_on_a_quiet_bus_leave_no_bells_behind() {
        let (sender, _) = broadcast::channel(16);
        let pacer = Arc::new(Pacer::default());
        let kept = pacer.subscribe(&sender);
        for _ in 0..100_000 {
            drop(pacer.subscribe(&sender));
        }
        let held = pacer.bells.lock().unwrap().all.len();
        assert!(held <= 2 * PRUNE_AT_LEAST, "{held} bells held");
        drop(kept);
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
            assert!(pacer.send(&sender, message(n)));
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

    async fn within<T>(wait: impl Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("in time")
    }

    #[tokio::test]
    async fn one_joining_while_the_dispatcher_is_behind_misses_nothing_and_hears_the_close() {
        let (sender, _) = broadcast::channel(16);
        let pacer = Arc::new(Pacer::default());
        let mut first = pacer.subscribe(&sender);
        // Sent before the second subscriber joins and heard by the dispatcher
        // after: not in the joined one's ring, nor in what it waits for.
        assert!(pacer.send(&sender, message(0)));
        let mut joined = pacer.subscribe(&sender);
        assert!(pacer.send(&sender, message(1)));
        let got = within(first.recv()).await.unwrap();
        assert_eq!(project(&got), "0");
        let got = within(first.recv()).await.unwrap();
        assert_eq!(project(&got), "1");
        let got = within(joined.recv()).await.unwrap();
        assert_eq!(project(&got), "1");
        assert!(pacer.send(&sender, message(2)));
        let got = within(joined.recv()).await.unwrap();
        assert_eq!(project(&got), "2");
        drop(sender);
        let closed = within(joined.recv()).await;
        assert!(matches!(closed, Err(RecvError::Closed)));
        let got = within(first.recv()).await.unwrap();
        assert_eq!(project(&got), "2");
        let closed = within(first.recv()).await;
        assert!(matches!(closed, Err(RecvError::Closed)));
    }

    #[tokio::test]
    async fn what_was_sent_is_read_before_the_dispatcher_rings_for_it() {
        use futures_util::FutureExt;
        let (sender, _) = broadcast::channel(16);
        let pacer = Arc::new(Pacer::default());
        let mut receiver = pacer.subscribe(&sender);
        // Nothing sent: the receiver waits for its bell.
        assert!(receiver.recv().now_or_never().is_none());
        // The dispatcher has not run since (one thread, no await in between):
        // the sends are read at once, in order, without a ring.
        for n in 0..3 {
            assert!(pacer.send(&sender, message(n)));
        }
        for n in 0..3 {
            let got = receiver.recv().now_or_never().expect("read without a ring");
            assert_eq!(project(&got.unwrap()), n.to_string());
        }
        assert!(receiver.recv().now_or_never().is_none());
        assert!(pacer.send(&sender, message(3)));
        let got = within(receiver.recv()).await.unwrap();
        assert_eq!(project(&got), "3");
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
            assert!(pacer.send(&sender, message(n)));
        }
        assert!(matches!(behind.recv().await, Err(RecvError::Lagged(2))));
        assert_eq!(project(&behind.recv().await.unwrap()), "2");
    }
}

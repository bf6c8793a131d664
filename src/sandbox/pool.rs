//! The worker threads and their bounded queue. Each worker is an OS thread
//! (never a tokio worker: guest code must not block the async runtime) with its
//! own engine; the async side only queues a job and awaits its answer. A request
//! finding the queue full is refused at once; background work may wait outside
//! it for a place. The threads and the queue are shared among tenants
//! (projects): one tenant runs on at most [`Shares::running`] threads and holds at
//! most [`Shares::waiting`] places of the queue, and a freed thread takes the
//! waiting job of the tenant running the fewest, so executions that sleep until
//! their timeout cannot hold every thread of a replica. How many run and wait is
//! on `/metrics` (`nimbus_function_executions_running`, `…_waiting`).

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::engine::{Watch, Worker};
use super::{Busy, Failure, Invocation, Outcome};

/// The OS stack of a worker: room for the engine's stack limit and the host
/// frames below it.
const THREAD_STACK: usize = 8 << 20;

struct Job {
    invocation: Invocation,
    reply: oneshot::Sender<Outcome>,
}

/// How much of the pool one tenant may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Threads one tenant's executions run on at once.
    pub running: usize,
    /// Places of the queue one tenant's executions hold.
    pub waiting: usize,
}

impl Shares {
    /// A quarter of the threads and of the queue kept for the other tenants,
    /// where there are enough to keep a quarter of (4 threads, 4 places).
    pub fn default_for(workers: usize, queue: usize) -> Shares {
        Shares {
            running: workers - workers / 4,
            waiting: queue - queue / 4,
        }
    }
}

/// One tenant's executions taken by a worker and waiting.
#[derive(Default)]
struct Load {
    taken: usize,
    waiting: usize,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Per tenant with executions taken or waiting.
    tenants: HashMap<Arc<str>, Load>,
    /// Waiting jobs whose tenant is under its share of threads: those a worker
    /// may take now.
    ready: usize,
    /// Jobs a worker has taken and not finished.
    taken: usize,
    /// Workers asleep, each on its own [`Shared::bells`], the last to sleep
    /// last: it is rung first, so that a few threads, their caches warm, take
    /// the executions while the others sleep on. A rung worker leaves it.
    sleeping: Vec<usize>,
    /// Workers whose execution waits for the host (a `fetch`, a
    /// `nimbus.graphql` call): taken, but not going to look at the queue soon.
    blocked: usize,
    closed: bool,
}

impl Queue {
    /// Counts the jobs a worker may take now, after a tenant's load changed.
    fn recount(&mut self, shares: Shares) {
        self.ready = self
            .tenants
            .values()
            .filter(|load| load.taken < shares.running)
            .map(|load| load.waiting)
            .sum();
    }

    /// Takes the waiting job of the tenant with the fewest running, the
    /// earliest of it; none while every waiting tenant holds its share.
    fn take(&mut self, shares: Shares) -> Option<Job> {
        if self.ready == 0 {
            return None;
        }
        let at = if self.tenants.len() == 1 {
            0
        } else {
            // Among the tenants running the fewest, first come first served.
            let fewest = self
                .tenants
                .values()
                .filter(|load| load.waiting > 0 && load.taken < shares.running)
                .map(|load| load.taken)
                .min()?;
            let tenants = &self.tenants;
            self.jobs.iter().position(|job| {
                tenants
                    .get(&job.invocation.tenant)
                    .is_some_and(|load| load.taken == fewest)
            })?
        };
        let job = self.jobs.remove(at)?;
        let load = self
            .tenants
            .entry(job.invocation.tenant.clone())
            .or_default();
        load.waiting -= 1;
        load.taken += 1;
        self.taken += 1;
        self.recount(shares);
        Some(job)
    }

    /// A job taken ended (or was skipped).
    fn release(&mut self, tenant: &Arc<str>, shares: Shares) {
        self.taken -= 1;
        if let Some(load) = self.tenants.get_mut(tenant) {
            load.taken -= 1;
            if load.taken == 0 && load.waiting == 0 {
                self.tenants.remove(tenant);
            }
        }
        self.recount(shares);
    }

    /// Whether a job waits that no awake worker is about to take: every wake-up
    /// is a system call and often a context switch on the request's path, so a
    /// job is left to a worker that runs guest code (it takes the job when it
    /// ends, or hands it on at its next interrupt check or wait, [`hand_off`]),
    /// and a sleeping one is rung only when none runs, or to hand on.
    fn wants_a_sleeper(&self, handing_off: bool) -> bool {
        let running = self.taken - self.blocked.min(self.taken);
        self.ready > 0 && !self.sleeping.is_empty() && (handing_off || running == 0)
    }

    /// Rings one sleeping worker, if [`Queue::wants_a_sleeper`].
    fn ring(&mut self, bells: &[Condvar], handing_off: bool) {
        if self.wants_a_sleeper(handing_off)
            && let Some(worker) = self.sleeping.pop()
        {
            bells[worker].notify_one();
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// One per worker, rung when it has work.
    bells: Vec<Condvar>,
    workers: usize,
    capacity: usize,
    shares: Shares,
    running: AtomicUsize,
    /// Moving average of execution time, in microseconds.
    average_us: AtomicU64,
    completed: AtomicU64,
    handle: Option<Handle>,
    /// Rung whenever a place frees up, for [`Pool::run_when_free`].
    freed: tokio::sync::Notify,
    /// How many jobs a worker may take now ([`Queue::ready`]), read without the
    /// lock by [`hand_off`].
    queued: AtomicUsize,
    /// Per worker, the owner prefixes of warm contexts to drop before its next
    /// execution ([`Pool::forget_warm`]).
    forgotten: Vec<Mutex<Vec<String>>>,
    /// `nimbus_function_executions_waiting` and `…_running`, registered once: a
    /// lookup in the recorder's registry per change would cost more than the
    /// change.
    waiting_gauge: metrics::Gauge,
    running_gauge: metrics::Gauge,
}

/// The worker threads executions run on, with a bounded queue before them.
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// `workers` threads, each running one execution at a time, and at most
    /// `queue` executions waiting for one. Host calls run in the tokio runtime
    /// `new` is called in (if any): a `nimbus.graphql` call polled by the worker
    /// while its execution waits for it, else on the runtime's threads (ADR 42).
    /// One tenant holds at most [`Shares::default_for`] of them.
    pub fn new(workers: usize, queue: usize) -> Pool {
        let shares = Shares::default_for(workers.max(1), queue);
        Pool::with_handle(workers, queue, shares, Handle::try_current().ok())
    }

    /// As [`Pool::new`], with each tenant's share and the runtime host calls
    /// run in given explicitly. A share is at least one thread and one place.
    pub fn with_handle(
        workers: usize,
        queue: usize,
        shares: Shares,
        handle: Option<Handle>,
    ) -> Pool {
        let workers = workers.max(1);
        let shares = Shares {
            running: shares.running.clamp(1, workers),
            waiting: shares.waiting.clamp(1, queue.max(1)),
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                tenants: HashMap::new(),
                ready: 0,
                taken: 0,
                sleeping: Vec::with_capacity(workers),
                blocked: 0,
                closed: false,
            }),
            bells: (0..workers).map(|_| Condvar::new()).collect(),
            workers,
            capacity: queue,
            shares,
            running: AtomicUsize::new(0),
            average_us: AtomicU64::new(1_000),
            completed: AtomicU64::new(0),
            handle,
            freed: tokio::sync::Notify::new(),
            queued: AtomicUsize::new(0),
            forgotten: (0..workers).map(|_| Mutex::default()).collect(),
            waiting_gauge: metrics::gauge!("nimbus_function_executions_waiting"),
            running_gauge: metrics::gauge!("nimbus_function_executions_running"),
        });
        for n in 0..workers {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("nimbus-fn-{n}"))
                .stack_size(THREAD_STACK)
                .spawn(move || work(shared, n))
                .expect("the OS starts a function worker thread");
        }
        Pool { shared }
    }

    /// Runs one execution to its end, or refuses it at once when the queue is full.
    /// Dropping the future abandons the execution: it is skipped if still
    /// queued, and stopped at its next interrupt check if running.
    pub async fn run(&self, invocation: Invocation) -> Result<Outcome, Busy> {
        match self.enqueue(invocation) {
            Ok(answer) => Ok(answered(answer.await)),
            Err((busy, _)) => Err(busy),
        }
    }

    /// Runs one execution to its end, waiting outside the queue while it is full:
    /// for background work (jobs), whose own concurrency bounds how many wait, so
    /// that a burst of requests delays it rather than failing it. Dropping the
    /// future abandons the execution, as with [`Pool::run`].
    pub async fn run_when_free(&self, mut invocation: Invocation) -> Outcome {
        loop {
            // Registered before trying, so a place freed in between is not missed.
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.enqueue(invocation) {
                Ok(answer) => return answered(answer.await),
                Err((_, back)) => {
                    if self.is_closed() {
                        return answered(Err(()));
                    }
                    invocation = back;
                    freed.await;
                }
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.shared.queue.lock().map(|q| q.closed).unwrap_or(true)
    }

    /// Queues `invocation`, or hands it back when every worker is busy and the
    /// queue is full, or its tenant holds its share of both.
    #[allow(clippy::result_large_err)]
    fn enqueue(
        &self,
        invocation: Invocation,
    ) -> Result<oneshot::Receiver<Outcome>, (Busy, Invocation)> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let shares = self.shared.shares;
            let held = queue
                .tenants
                .get(&invocation.tenant)
                .map_or(0, |load| load.taken + load.waiting);
            // Every worker runs one; past them, `capacity` wait.
            if queue.closed
                || queue.jobs.len() + queue.taken >= self.shared.capacity + self.shared.workers
                || held >= shares.running + shares.waiting
            {
                let busy = Busy {
                    retry_after: self.retry_after(queue.jobs.len()),
                };
                return Err((busy, invocation));
            }
            queue
                .tenants
                .entry(invocation.tenant.clone())
                .or_default()
                .waiting += 1;
            queue.jobs.push_back(Job { invocation, reply });
            queue.recount(shares);
            self.shared.queued.store(queue.ready, Ordering::Relaxed);
            self.shared.waiting_gauge.set(queue.jobs.len() as f64);
            queue.ring(&self.shared.bells, false);
        }
        Ok(answer)
    }

    /// How long until a place is likely free: the waiting executions shared
    /// among the workers, at the recent average duration; whole seconds (it
    /// becomes `Retry-After`).
    fn retry_after(&self, waiting: usize) -> Duration {
        let average = self.shared.average_us.load(Ordering::Relaxed);
        let rounds = (waiting / self.shared.workers + 1) as u64;
        let micros = average.saturating_mul(rounds);
        Duration::from_secs(micros.div_ceil(1_000_000).clamp(1, 60))
    }

    /// Drops the warm contexts whose owner starts with `prefix` (all with `""`)
    /// on every worker, before that worker's next execution. Executions whose
    /// key changed never reuse the old context anyway; this frees its memory.
    pub fn forget_warm(&self, prefix: &str) {
        for inbox in &self.shared.forgotten {
            let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
            if inbox.len() >= 64 {
                // Many changes at once: drop every warm context of the worker.
                inbox.clear();
                inbox.push(String::new());
            } else {
                inbox.push(prefix.to_string());
            }
        }
    }

    /// Threads running executions.
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Executions running now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Executions waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.shared
            .queue
            .lock()
            .map(|q| q.jobs.len())
            .unwrap_or_default()
    }

    /// Executions finished since the pool started.
    pub fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::Relaxed)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.closed = true;
        }
        for bell in &self.shared.bells {
            bell.notify_all();
        }
        self.shared.freed.notify_waiters();
    }
}

/// The outcome a worker sent, or a crash when it dropped the reply unsent.
fn answered<E>(answer: Result<Outcome, E>) -> Outcome {
    answer.unwrap_or_else(|_| Outcome {
        result: Err(Failure::Crashed),
        logs: String::new(),
        errors: String::new(),
        logs_truncated: false,
        duration: Duration::ZERO,
    })
}

fn next(shared: &Shared, n: usize) -> Option<Job> {
    let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(job) = queue.take(shared.shares) {
            shared.queued.store(queue.ready, Ordering::Relaxed);
            shared.waiting_gauge.set(queue.jobs.len() as f64);
            return Some(job);
        }
        if queue.closed {
            return None;
        }
        queue.sleeping.push(n);
        queue = shared.bells[n]
            .wait(queue)
            .unwrap_or_else(|p| p.into_inner());
        // Woken without being rung (spuriously, or to close): off the list.
        if let Some(at) = queue.sleeping.iter().rposition(|&w| w == n) {
            queue.sleeping.remove(at);
        }
    }
}

/// Rings a sleeping worker for the jobs waiting while this one runs guest code
/// or waits for the host: cheap (no lock) when none waits.
fn hand_off(shared: &Shared) {
    if shared.queued.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    queue.ring(&shared.bells, true);
}

/// The running execution's [`Watch`]: its caller gone, and the moments it
/// hands waiting jobs on.
struct Watcher {
    reply: Rc<oneshot::Sender<Outcome>>,
    shared: Arc<Shared>,
}

impl Watch for Watcher {
    fn cancelled(&self) -> bool {
        hand_off(&self.shared);
        self.reply.is_closed()
    }

    fn waiting(&self, waiting: bool) {
        let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if waiting {
            queue.blocked += 1;
            queue.ring(&self.shared.bells, true);
        } else {
            queue.blocked = queue.blocked.saturating_sub(1);
        }
    }
}

fn done(shared: &Shared, tenant: &Arc<str>) {
    let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    queue.release(tenant, shared.shares);
    shared.queued.store(queue.ready, Ordering::Relaxed);
    drop(queue);
    shared.freed.notify_waiters();
}

fn work(shared: Arc<Shared>, n: usize) {
    let mut worker = match Worker::new() {
        Ok(worker) => worker,
        Err(error) => {
            tracing::error!(%error, "a function worker could not start its engine");
            return;
        }
    };
    worker.prepare();
    while let Some(job) = next(&shared, n) {
        let forgotten = std::mem::take(
            &mut *shared.forgotten[n]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for prefix in forgotten {
            worker.forget_warm(&prefix);
        }
        let tenant = job.invocation.tenant.clone();
        if job.reply.is_closed() {
            done(&shared, &tenant);
            continue;
        }
        let running = shared.running.fetch_add(1, Ordering::Relaxed) + 1;
        shared.running_gauge.set(running as f64);
        let reply = Rc::new(job.reply);
        let cancelled: Box<dyn Watch> = Box::new(Watcher {
            reply: reply.clone(),
            shared: shared.clone(),
        });
        let handle = shared.handle.clone();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            worker.execute(job.invocation, handle, Some(cancelled))
        }));
        let outcome = match run {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::error!("a function execution panicked; its engine is replaced");
                if let Ok(fresh) = Worker::new() {
                    worker = fresh;
                }
                Outcome {
                    result: Err(Failure::Crashed),
                    logs: String::new(),
                    errors: String::new(),
                    logs_truncated: false,
                    duration: Duration::ZERO,
                }
            }
        };
        let micros = outcome.duration.as_micros().min(u64::MAX as u128) as u64;
        let old = shared.average_us.load(Ordering::Relaxed);
        shared
            .average_us
            .store((old * 7 + micros) / 8, Ordering::Relaxed);
        shared.completed.fetch_add(1, Ordering::Relaxed);
        let running = shared.running.fetch_sub(1, Ordering::Relaxed) - 1;
        shared.running_gauge.set(running as f64);
        done(&shared, &tenant);
        if let Ok(reply) = Rc::try_unwrap(reply) {
            let _ = reply.send(outcome);
        }
        // Answered first: the next execution's context is made off its path,
        // unless one waits already (it then makes its own, at once).
        if shared.queued.load(Ordering::Relaxed) == 0 {
            worker.prepare();
        }
    }
}

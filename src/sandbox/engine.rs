//! One engine (a QuickJS runtime) and the run of one execution in a fresh
//! context on it: the guest API installed, the deployment's modules loaded from
//! bytecode, its promise driven to the end while host calls run, and every
//! limit enforced. A `nimbus.graphql` call runs on the engine's own thread while
//! the engine waits for it, and moves to the async runtime when guest code runs
//! again; a `fetch` runs on the runtime. Warm contexts ([`super::WarmKey`]) each
//! live on a runtime of their own, kept by the worker between executions of one
//! deployment, and are dropped after any execution that did not end cleanly.
//!
//! An engine lives on one thread and runs one execution at a time. It must not
//! be shared between threads, and it never waits on anything but its own
//! execution's host calls and timers.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::mem::MaybeUninit;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use rquickjs::function::Args;
use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::{Declared, Evaluated};
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, ArrayBuffer, Coerced, Context, Ctx, Exception, Function, Module, Object, Persistent,
    Promise, Runtime, Value, WriteOptions,
};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::meter::{Meter, Metered};
use super::program::{self, Bundle};
use super::{
    Failure, FetchRequest, FetchResponse, Held, Host, Limits, Outcome, Request, Response, WarmKey,
};

/// The host calls one execution may have in flight at once.
const MAX_HOST_CALLS: usize = 64;
/// The timers one execution may have pending at once.
const MAX_TIMERS: usize = 1024;
/// The engine's stack is capped below the worker thread's own.
pub(crate) const MAX_STACK: usize = 4 << 20;
/// How often a wait for host calls looks whether the caller went away.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// The name the guest API's module is compiled under; no deployment module can
/// have it (`<` is refused in module names).
const PRELUDE_NAME: &str = "<nimbus>";
/// Warm contexts one worker thread keeps at most; the least recently used goes.
pub(crate) const WARM_CONTEXTS: usize = 8;
/// Engine bytes the warm contexts of one thread may hold together before the
/// least recently used are dropped (one context alone may hold up to its
/// function's memory limit).
pub(crate) const WARM_BYTES: usize = 128 << 20;

/// The guest API's bytecode, compiled once per process.
fn prelude() -> &'static [u8] {
    static PRELUDE: OnceLock<Vec<u8>> = OnceLock::new();
    PRELUDE.get_or_init(|| {
        let runtime = Runtime::new().expect("the engine starts");
        let context = Context::full(&runtime).expect("the engine starts");
        context.with(|ctx| {
            let module = Module::declare(ctx, PRELUDE_NAME, include_str!("prelude.js"))
                .expect("the guest API compiles");
            module
                .write(WriteOptions::default())
                .expect("the guest API compiles")
        })
    })
}

/// Why the interrupt handler stopped guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abort {
    Cpu,
    Wall,
    Cancelled,
}

impl Abort {
    fn failure(self) -> Failure {
        match self {
            Abort::Cpu => Failure::CpuLimit,
            Abort::Wall | Abort::Cancelled => Failure::Timeout,
        }
    }
}

/// What runs an execution learns from it while it runs: whether its caller is
/// gone, asked at every interrupt check and before every wait for the host, and
/// when it waits for the host and runs again (the pool hands queued executions
/// to another thread then).
pub(crate) trait Watch {
    fn cancelled(&self) -> bool;

    fn waiting(&self, _waiting: bool) {}
}

impl<F: Fn() -> bool> Watch for F {
    fn cancelled(&self) -> bool {
        self()
    }
}

/// What the interrupt handler and the module loader of one engine share with it.
struct Shared {
    cpu_deadline: Cell<Instant>,
    wall_deadline: Cell<Instant>,
    abort: Cell<Option<Abort>>,
    cancelled: RefCell<Option<Box<dyn Watch>>>,
    program: RefCell<Option<Arc<[u8]>>>,
}

impl Shared {
    fn interrupt(&self) -> bool {
        if self.abort.get().is_some() {
            return true;
        }
        let now = Instant::now();
        let reason = if now >= self.wall_deadline.get() {
            Abort::Wall
        } else if now >= self.cpu_deadline.get() {
            Abort::Cpu
        } else if self
            .cancelled
            .borrow()
            .as_ref()
            .is_some_and(|c| c.cancelled())
        {
            Abort::Cancelled
        } else {
            return false;
        };
        self.abort.set(Some(reason));
        true
    }

    fn arm(&self, start: Instant, limits: &Limits, cancelled: Option<Box<dyn Watch>>) {
        self.cpu_deadline.set(start + limits.cpu);
        self.wall_deadline.set(start + limits.wall);
        self.abort.set(None);
        *self.cancelled.borrow_mut() = cancelled;
    }

    fn disarm(&self) {
        *self.cancelled.borrow_mut() = None;
        *self.program.borrow_mut() = None;
    }

    /// Time spent waiting for the host is not guest CPU time.
    fn credit(&self, waited: Duration) {
        self.cpu_deadline.set(self.cpu_deadline.get() + waited);
    }

    /// The execution waits for the host (`true`), or runs again.
    fn waiting(&self, waiting: bool) {
        if let Some(watch) = self.cancelled.borrow().as_ref() {
            watch.waiting(waiting);
        }
    }

    fn is_cancelled(&self) -> bool {
        if self
            .cancelled
            .borrow()
            .as_ref()
            .is_some_and(|c| c.cancelled())
        {
            self.abort.set(Some(Abort::Cancelled));
        }
        self.abort.get() == Some(Abort::Cancelled)
    }
}

struct BundleResolver(Rc<Shared>);

impl Resolver for BundleResolver {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let resolved = match program::resolve(base, name) {
            Ok(resolved) => resolved,
            Err(message) => return Err(Exception::throw_reference(ctx, &message)),
        };
        let program = self.0.program.borrow();
        let known = program
            .as_deref()
            .and_then(|bytes| Bundle::parse(bytes).ok())
            .is_some_and(|b| b.modules.contains_key(resolved.as_str()));
        if !known {
            return Err(Exception::throw_reference(
                ctx,
                &format!(
                    "cannot import '{name}' from '{base}': the deployment has no module '{resolved}'"
                ),
            ));
        }
        Ok(resolved)
    }
}

struct BundleLoader(Rc<Shared>);

impl Loader for BundleLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let program = self.0.program.borrow();
        let code = program
            .as_deref()
            .and_then(|bytes| Bundle::parse(bytes).ok())
            .and_then(|b| b.modules.get(name).copied());
        match code {
            // SAFETY: the bytes were written by `compile` with this engine's
            // version (checked by `Bundle::parse`), and programs are stored by
            // the server, never taken from a client.
            Some(code) => unsafe { Module::load(ctx.clone(), code) },
            None => Err(Exception::throw_reference(
                ctx,
                &format!("the deployment has no module '{name}'"),
            )),
        }
    }
}

/// One QuickJS runtime, reused by the executions of one worker thread.
pub(crate) struct Worker {
    /// The context the next execution gets, made while the worker had nothing to
    /// do. Declared first: it goes before the runtime it lives in.
    spare: Option<Spare>,
    /// Warm contexts, least recently used first, each on its own runtime.
    warm: Vec<Warm>,
    runtime: Runtime,
    shared: Rc<Shared>,
    meter: Rc<Meter>,
}

/// A context made ahead of an execution: new, with the guest API's module
/// evaluated in it and nothing else. No guest code, host, variable or request has
/// touched it; each is used by one execution, then dropped.
struct Spare {
    /// The guest API module's namespace, kept alive outside the context's scope.
    api: Persistent<Object<'static>>,
    context: Context,
}

/// A context kept between the executions of one deployment on one thread. It
/// has a runtime of its own, so its memory is metered apart from every other
/// context's (the guest's kept state counts against its own limit), and
/// dropping it frees everything the guest kept.
struct Warm {
    /// The loaded program and guest API, once the first execution made them.
    /// Declared first: they go before the context and runtime they live in.
    kept: Option<Kept>,
    context: Context,
    engine: Worker,
    /// The execution the guest API's natives act for now; empty between
    /// executions, so nothing of one (its host, its identity) stays reachable.
    slot: Rc<Slot>,
    key: WarmKey,
}

/// What a warm context keeps of its first execution.
struct Kept {
    invoke: Persistent<Function<'static>>,
    settle: Persistent<Function<'static>>,
    has_default: Persistent<Function<'static>>,
    context: Persistent<Object<'static>>,
    entry: Persistent<Object<'static>>,
}

impl Kept {
    fn save<'js>(ctx: &Ctx<'js>, api: &Api<'js>, entry: &Object<'js>) -> Kept {
        Kept {
            invoke: Persistent::save(ctx, api.invoke.clone()),
            settle: Persistent::save(ctx, api.settle.clone()),
            has_default: Persistent::save(ctx, api.has_default.clone()),
            context: Persistent::save(ctx, api.context.clone()),
            entry: Persistent::save(ctx, entry.clone()),
        }
    }

    fn restore<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<(Api<'js>, Object<'js>)> {
        Ok((
            Api {
                invoke: self.invoke.clone().restore(ctx)?,
                settle: self.settle.clone().restore(ctx)?,
                has_default: self.has_default.clone().restore(ctx)?,
                context: self.context.clone().restore(ctx)?,
            },
            self.entry.clone().restore(ctx)?,
        ))
    }
}

/// The execution a context's natives serve.
#[derive(Default)]
struct Slot(RefCell<Option<Rc<Exec>>>);

impl Slot {
    fn holding(exec: &Rc<Exec>) -> Rc<Slot> {
        Rc::new(Slot(RefCell::new(Some(exec.clone()))))
    }

    fn exec(&self, ctx: &Ctx<'_>) -> rquickjs::Result<Rc<Exec>> {
        self.0
            .borrow()
            .clone()
            .ok_or_else(|| Exception::throw_internal(ctx, "no execution is running"))
    }
}

impl Warm {
    fn new(key: WarmKey) -> rquickjs::Result<Warm> {
        let engine = Worker::new()?;
        let context = Context::full(&engine.runtime)?;
        Ok(Warm {
            kept: None,
            context,
            engine,
            slot: Rc::default(),
            key,
        })
    }

    /// Runs one execution in the kept context; the first loads the guest API and
    /// the program (its top-level code runs then, under this execution's limits).
    fn run(
        &mut self,
        exec: &Rc<Exec>,
        invocation: super::Invocation,
        start: Instant,
        cancelled: Option<Box<dyn Watch>>,
    ) -> Result<Response, Failure> {
        let limits = &invocation.limits;
        let engine = &self.engine;
        engine.set_limits(limits);
        engine.shared.arm(start, limits, cancelled);
        *engine.shared.program.borrow_mut() = Some(invocation.program.bytes.clone());
        *self.slot.0.borrow_mut() = Some(exec.clone());
        let kept = &mut self.kept;
        let slot = &self.slot;
        let result = self.context.with(|ctx| {
            let (api, entry) = match kept.as_ref() {
                Some(k) => k.restore(&ctx).map_err(|e| engine.fail(&ctx, e))?,
                None => {
                    let api = engine.api(&ctx, slot, limits, &invocation.env, None)?;
                    let module = engine
                        .load_entry(&ctx, exec, &api, &invocation.program.bytes)
                        .map_err(|l| match l {
                            Loaded::Failed(f) => f,
                            Loaded::Threw(c) => engine.classify(c),
                        })?;
                    let entry = module.namespace().map_err(|e| engine.fail(&ctx, e))?;
                    *kept = Some(Kept::save(&ctx, &api, &entry));
                    (api, entry)
                }
            };
            engine.respond(&ctx, exec, limits, &api, entry, invocation.request)
        });
        *self.slot.0.borrow_mut() = None;
        engine.shared.disarm();
        result
    }

    /// Whether the context may serve another execution: nothing cut short, no
    /// refused allocation the guest caught, no job, host call or timer left.
    fn reusable(&self, exec: &Exec) -> bool {
        self.engine.shared.abort.get().is_none()
            && !self.engine.meter.refused.get()
            && exec.calls.borrow().is_empty()
            && exec.timers.borrow().is_empty()
            && !jobs_pending(&self.engine.runtime)
    }

    fn bytes(&self) -> usize {
        self.engine.meter.used.get()
    }
}

/// What a host call or timer answered.
enum Answer {
    Fetch(Result<FetchResponse, String>),
    /// The response as JSON text, parsed on the sandbox thread.
    Graphql(String),
    Refused(String),
}

impl Answer {
    /// What the host counted of it on [`Held`] until it is delivered.
    fn held_bytes(&self) -> usize {
        match self {
            Answer::Fetch(Ok(response)) => response.body.len(),
            Answer::Graphql(text) => text.len(),
            Answer::Fetch(Err(_)) | Answer::Refused(_) => 0,
        }
    }
}

/// The state of one execution that the guest API's native functions reach.
struct Exec {
    host: Arc<dyn Host>,
    handle: Option<Handle>,
    log_limit: usize,
    logs: RefCell<String>,
    errors: RefCell<String>,
    log_used: Cell<usize>,
    truncated: Cell<bool>,
    next_id: Cell<u32>,
    /// The engine's meter, which also counts what host calls hold.
    meter: Rc<Meter>,
    /// The answers the host holds until they are delivered, counted with the meter.
    held: Held,
    /// Every host call in flight.
    calls: RefCell<HashMap<u32, InFlight>>,
    /// Calls started since the engine last waited: not polled yet.
    fresh: RefCell<Vec<HostCall>>,
    /// Calls polled on this thread while the engine waits; handed to the async
    /// runtime before guest code runs again (`hand_off`).
    polled: RefCell<FuturesUnordered<HostCall>>,
    timers: RefCell<BTreeSet<(Instant, u32)>>,
    /// Answers of the calls handed to the async runtime.
    tx: mpsc::UnboundedSender<(u32, Answer)>,
    rx: RefCell<mpsc::UnboundedReceiver<(u32, Answer)>>,
    /// Wakes this thread when a polled call or the channel is ready.
    waker: Waker,
}

impl Drop for Exec {
    /// Calls not stopped yet (an unwinding execution) go inside the runtime too.
    fn drop(&mut self) {
        self.drop_local_calls();
    }
}

/// Where a host call runs.
#[derive(Clone, Copy)]
enum Where {
    /// On the engine's thread while it waits: `nimbus.graphql`, whose work is
    /// the server's own and gains most from skipping a hop.
    Here,
    /// On the async runtime from the start: `fetch`. A network call gains little
    /// from the hop, and the client's pool takes a connection back on the
    /// runtime: a next `fetch` made at once from here would race that and open
    /// a second connection.
    Runtime,
}

/// A host call in flight.
struct InFlight {
    /// Aborts it on the async runtime, once it runs there.
    abort: Option<tokio::task::AbortHandle>,
    /// Bytes of the guest's request the host holds until the call ends,
    /// reserved on the meter: up to [`MAX_HOST_CALLS`] copies of a body or a
    /// query would otherwise live outside the memory limit.
    held: usize,
}

/// One host call's work, with the id its answer settles.
struct HostCall {
    id: u32,
    work: BoxFuture<'static, Answer>,
}

impl Future for HostCall {
    type Output = (u32, Answer);

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<(u32, Answer)> {
        let id = self.id;
        // A panic in the host's code fails this call, not the engine's thread.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.work.as_mut().poll(cx))) {
            Ok(Poll::Ready(answer)) => Poll::Ready((id, answer)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready((id, Answer::Refused("the host call failed".into()))),
        }
    }
}

/// Unparks the engine's thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Exec {
    fn new(
        host: Arc<dyn Host>,
        handle: Option<Handle>,
        log_limit: usize,
        memory: usize,
        meter: Rc<Meter>,
    ) -> Exec {
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Held::new(memory);
        *meter.outside.borrow_mut() = Some(held.clone());
        Exec {
            held,
            host,
            handle,
            log_limit,
            logs: RefCell::default(),
            errors: RefCell::default(),
            log_used: Cell::new(0),
            truncated: Cell::new(false),
            next_id: Cell::new(1),
            meter,
            calls: RefCell::default(),
            fresh: RefCell::default(),
            polled: RefCell::default(),
            timers: RefCell::default(),
            tx,
            rx: RefCell::new(rx),
            waker: Waker::from(Arc::new(Unpark(std::thread::current()))),
        }
    }

    fn id(&self) -> u32 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        id
    }

    /// Keeps output up to the limit, counting logs and errors together.
    fn log(&self, stream: i32, text: &str) -> bool {
        if self.truncated.get() {
            return false;
        }
        let room = self.log_limit.saturating_sub(self.log_used.get());
        let need = text.len() + 1;
        let mut target = if stream == 0 {
            self.logs.borrow_mut()
        } else {
            self.errors.borrow_mut()
        };
        if need <= room {
            target.push_str(text);
            target.push('\n');
            self.log_used.set(self.log_used.get() + need);
            true
        } else {
            let mut cut = room;
            while cut > 0 && !text.is_char_boundary(cut) {
                cut -= 1;
            }
            target.push_str(&text[..cut]);
            self.log_used.set(self.log_limit);
            self.truncated.set(true);
            false
        }
    }

    /// Starts a host call: `Where::Here` runs it when the engine next waits
    /// (`wait`), `Where::Runtime` spawns it on the async runtime at once.
    /// `held` is what `work` copies of the guest's request for the host: it
    /// counts against the memory limit until the call ends, and a call it does
    /// not fit under is refused with the engine's own out-of-memory error
    /// before anything is copied.
    fn start(
        &self,
        ctx: &Ctx<'_>,
        place: Where,
        held: usize,
        work: impl FnOnce(&dyn Host) -> BoxFuture<'static, Answer>,
    ) -> rquickjs::Result<u32> {
        if self.calls.borrow().len() >= MAX_HOST_CALLS {
            return Err(Exception::throw_range(
                ctx,
                &format!(
                    "at most {MAX_HOST_CALLS} fetch and nimbus.graphql calls can be pending at once"
                ),
            ));
        }
        if !self.meter.reserve(held) {
            return Err(rquickjs::Error::Allocation);
        }
        let id = self.id();
        let abort = match (&self.handle, place) {
            (Some(_), Where::Here) => {
                let work = work(self.host.as_ref());
                self.fresh.borrow_mut().push(HostCall { id, work });
                None
            }
            (Some(handle), Where::Runtime) => {
                let call = HostCall {
                    id,
                    work: work(self.host.as_ref()),
                };
                let tx = self.tx.clone();
                Some(handle.spawn(async move {
                    let _ = tx.send(call.await);
                }))
            }
            (None, _) => {
                let _ = self
                    .tx
                    .send((id, Answer::Refused("the host is not reachable here".into())));
                None
            }
        };
        let abort = abort.map(|task| task.abort_handle());
        self.calls.borrow_mut().insert(id, InFlight { abort, held });
        Ok(id)
    }

    /// Ends the call `id` has (its answer came), giving back what it held;
    /// `false` when it has ended already (stopped).
    fn end_call(&self, id: u32) -> bool {
        let ended = self.calls.borrow_mut().remove(&id);
        if let Some(call) = &ended {
            self.meter.release(call.held);
        }
        ended.is_some()
    }

    /// Waits until `until` for one host call's answer. The calls started since
    /// the last wait are polled here, on this thread: a call the guest awaits
    /// alone (the common case) runs with no hop to the async runtime and back.
    fn wait(&self, until: Instant) -> Option<(u32, Answer)> {
        // Host code may spawn tasks or open sockets, and what it drops may too.
        let _runtime = self.handle.as_ref().map(Handle::enter);
        let mut polled = self.polled.borrow_mut();
        polled.extend(self.fresh.borrow_mut().drain(..));
        let mut cx = std::task::Context::from_waker(&self.waker);
        loop {
            if let Poll::Ready(Some(answer)) = self.rx.borrow_mut().poll_recv(&mut cx) {
                return Some(answer);
            }
            if !polled.is_empty()
                && let Poll::Ready(Some(answer)) = polled.poll_next_unpin(&mut cx)
            {
                return Some(answer);
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            std::thread::park_timeout(until - now);
        }
    }

    /// Moves the calls polled here to the async runtime, before guest code runs
    /// again: a started call (a transaction, a connection) keeps going while the
    /// guest computes, rather than waiting for the engine's next wait.
    fn hand_off(&self) {
        let polled = std::mem::take(&mut *self.polled.borrow_mut());
        let Some(handle) = &self.handle else { return };
        let mut calls = self.calls.borrow_mut();
        for call in polled {
            let tx = self.tx.clone();
            let id = call.id;
            let task = handle.spawn(async move {
                let _ = tx.send(call.await);
            });
            if let Some(call) = calls.get_mut(&id) {
                call.abort = Some(task.abort_handle());
            }
        }
    }

    fn timer(&self, ctx: &Ctx<'_>, ms: f64) -> rquickjs::Result<u32> {
        if self.timers.borrow().len() >= MAX_TIMERS {
            return Err(Exception::throw_range(
                ctx,
                &format!("at most {MAX_TIMERS} timers can be pending at once"),
            ));
        }
        let id = self.id();
        // Past the wall time the execution is over anyway.
        let delay = Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 86_400.0));
        self.timers
            .borrow_mut()
            .insert((Instant::now() + delay, id));
        Ok(id)
    }

    fn cancel_timer(&self, id: u32) {
        self.timers.borrow_mut().retain(|(_, t)| *t != id);
    }

    fn due_timer(&self, now: Instant) -> Option<u32> {
        let mut timers = self.timers.borrow_mut();
        let first = *timers.first()?;
        (first.0 <= now).then(|| {
            timers.remove(&first);
            first.1
        })
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.borrow().first().map(|(at, _)| *at)
    }

    fn stop_host_calls(&self) {
        for (_, call) in self.calls.borrow_mut().drain() {
            if let Some(abort) = call.abort {
                abort.abort();
            }
            self.meter.release(call.held);
        }
        self.drop_local_calls();
    }

    /// Drops the calls not handed to the runtime, inside it: a call's resources
    /// (a pooled connection) may spawn a task as they go.
    fn drop_local_calls(&self) {
        let _runtime = self.handle.as_ref().map(Handle::enter);
        self.fresh.borrow_mut().clear();
        *self.polled.borrow_mut() = FuturesUnordered::new();
    }
}

/// An exception taken apart.
pub(crate) struct Caught {
    pub message: String,
    pub stack: Option<String>,
    pub line: Option<u32>,
    pub out_of_memory: bool,
    pub stack_overflow: bool,
}

/// Takes the pending exception (for `Error::Exception`) and describes it.
pub(crate) fn caught(ctx: &Ctx<'_>, error: rquickjs::Error) -> Caught {
    let value = match error {
        rquickjs::Error::Exception => ctx.catch(),
        rquickjs::Error::Allocation => {
            return Caught {
                message: "out of memory".into(),
                stack: None,
                line: None,
                out_of_memory: true,
                stack_overflow: false,
            };
        }
        other => {
            return Caught {
                message: other.to_string(),
                stack: None,
                line: None,
                out_of_memory: false,
                stack_overflow: false,
            };
        }
    };
    describe(&value)
}

fn describe(value: &Value<'_>) -> Caught {
    if value.is_null() {
        // QuickJS throws null when it cannot even allocate the error.
        return Caught {
            message: "null".into(),
            stack: None,
            line: None,
            out_of_memory: false,
            stack_overflow: false,
        };
    }
    if let Some(object) = value.as_object() {
        let text = |key: &str| -> Option<String> {
            match object.get::<_, Value>(key) {
                Ok(v) if !v.is_undefined() && !v.is_null() => {
                    v.get::<Coerced<String>>().ok().map(|c| c.0)
                }
                _ => None,
            }
        };
        if let Some(message) = text("message") {
            let name = text("name").unwrap_or_else(|| "Error".into());
            let line = object.get::<_, Option<f64>>("lineNumber").ok().flatten();
            return Caught {
                out_of_memory: name == "InternalError" && message == "out of memory",
                stack_overflow: name == "RangeError"
                    && message == "Maximum call stack size exceeded",
                message: format!("{name}: {message}"),
                stack: text("stack").filter(|s| !s.is_empty()),
                line: line.filter(|l| *l >= 1.0).map(|l| l as u32),
            };
        }
    }
    let message = value
        .get::<Coerced<String>>()
        .map(|c| c.0)
        .unwrap_or_else(|_| "a value that cannot be shown".into());
    Caught {
        message: format!("Uncaught {message}"),
        stack: None,
        line: None,
        out_of_memory: false,
        stack_overflow: false,
    }
}

/// The 1-based line of `module` named in a stack trace (`module:line:column`).
pub(crate) fn line_in(stack: &str, module: &str) -> Option<u32> {
    let needle = format!("{module}:");
    let mut rest = stack;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + needle.len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if matches!(before, None | Some(' ' | '(')) && !digits.is_empty() {
            return digits.parse().ok();
        }
        rest = after;
    }
    None
}

/// The first of `modules` named with a line in a stack trace: where an error is.
pub(crate) fn locate(stack: &str, modules: &[String]) -> Option<(String, u32)> {
    stack.lines().find_map(|frame| {
        modules
            .iter()
            .find_map(|m| line_in(frame, m).map(|l| (m.clone(), l)))
    })
}

/// Runs the job queue until it is empty; an error is an uncatchable exception
/// (an interrupt) or an allocation failure inside a job.
fn run_jobs(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    loop {
        let mut job_ctx = MaybeUninit::<*mut rquickjs::qjs::JSContext>::uninit();
        // SAFETY: the runtime is this context's, locked by `Context::with`.
        let status = unsafe {
            let rt = rquickjs::qjs::JS_GetRuntime(ctx.as_raw().as_ptr());
            rquickjs::qjs::JS_ExecutePendingJob(rt, job_ctx.as_mut_ptr())
        };
        match status {
            0 => return Ok(()),
            // One context per runtime at a time: the exception is on `ctx`.
            s if s < 0 => return Err(rquickjs::Error::Exception),
            _ => {}
        }
    }
}

fn jobs_pending(runtime: &Runtime) -> bool {
    runtime.is_job_pending()
}

/// The guest API's entry points, taken from its module.
struct Api<'js> {
    invoke: Function<'js>,
    settle: Function<'js>,
    has_default: Function<'js>,
    context: Object<'js>,
}

impl Worker {
    pub fn new() -> rquickjs::Result<Worker> {
        let meter = Rc::new(Meter::default());
        meter.limit.set(Limits::default().memory);
        let runtime = Runtime::new_with_alloc(Metered(meter.clone()))?;
        let now = Instant::now();
        let shared = Rc::new(Shared {
            cpu_deadline: Cell::new(now),
            wall_deadline: Cell::new(now),
            abort: Cell::new(None),
            cancelled: RefCell::new(None),
            program: RefCell::new(None),
        });
        let handler = shared.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || handler.interrupt())));
        runtime.set_loader(BundleResolver(shared.clone()), BundleLoader(shared.clone()));
        Ok(Worker {
            spare: None,
            warm: Vec::new(),
            runtime,
            shared,
            meter,
        })
    }

    /// Makes the next execution's context now, while no execution waits for it:
    /// a new context and the guest API module evaluated in it (most of what an
    /// execution costs before the guest runs). Under the default limits; when it
    /// fails, the next execution makes its own.
    pub fn prepare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        let limits = Limits::default();
        self.set_limits(&limits);
        self.shared.arm(Instant::now(), &limits, None);
        let spare = Context::full(&self.runtime).ok().and_then(|context| {
            let api = context.with(|ctx| {
                // SAFETY: the prelude's bytecode was written by this engine in this process.
                let module = unsafe { Module::load(ctx.clone(), prelude()) }.ok()?;
                let (module, promise) = module.eval().ok()?;
                run_jobs(&ctx).ok()?;
                if promise.state() != PromiseState::Resolved {
                    return None;
                }
                Some(Persistent::save(&ctx, module.namespace().ok()?))
            })?;
            Some(Spare { api, context })
        });
        self.shared.disarm();
        if spare.is_none() || self.shared.abort.get().is_some() || jobs_pending(&self.runtime) {
            // Not clean: the execution makes its own, on a fresh engine.
            self.renew();
            return;
        }
        self.spare = spare;
    }

    /// Bytes the engine holds now, and the most it held during the last execution.
    #[cfg(test)]
    pub fn memory(&self) -> (usize, usize) {
        (self.meter.used.get(), self.meter.peak.get())
    }

    fn set_limits(&self, limits: &Limits) {
        // The metered allocator enforces it (QuickJS's own limit does not apply
        // to a custom allocator).
        self.meter.limit.set(limits.memory.max(1 << 20));
        self.meter.refused.set(false);
        self.meter.peak.set(self.meter.used.get());
        self.runtime
            .set_max_stack_size(limits.stack.clamp(64 << 10, MAX_STACK));
    }

    /// After an execution that was cut short, or left work queued, the engine is
    /// replaced: nothing of it may reach the next one.
    fn recycle(&mut self, result: &Result<Response, Failure>) {
        let clean = matches!(
            result,
            Ok(_)
                | Err(Failure::Thrown(_))
                | Err(Failure::NeverSettled)
                | Err(Failure::InvalidResponse(_))
                | Err(Failure::ResponseTooLarge)
        );
        if !clean || jobs_pending(&self.runtime) {
            self.renew();
        }
    }

    /// Replaces the engine of fresh contexts; warm contexts have their own.
    fn renew(&mut self) {
        if let Ok(mut fresh) = Worker::new() {
            fresh.warm = std::mem::take(&mut self.warm);
            *self = fresh;
        }
    }

    /// Drops the warm contexts whose owner starts with `prefix`.
    pub fn forget_warm(&mut self, prefix: &str) {
        self.warm.retain(|w| !w.key.owner.starts_with(prefix));
    }

    /// The warm contexts kept, for tests.
    #[cfg(test)]
    pub fn warm_contexts(&self) -> usize {
        self.warm.len()
    }

    /// Runs one execution in the warm context of its key: the kept one when its
    /// version matches, else a new one (the old is dropped). The context is kept
    /// for the next execution only when this one ended cleanly.
    fn execute_warm(
        &mut self,
        key: WarmKey,
        invocation: super::Invocation,
        handle: Option<Handle>,
        cancelled: Option<Box<dyn Watch>>,
    ) -> Outcome {
        let start = Instant::now();
        let found = self
            .warm
            .iter()
            .position(|w| w.key.owner == key.owner)
            .map(|at| self.warm.remove(at));
        let warm = match found {
            Some(warm) if warm.key == key => Ok(warm),
            // Made for another deployment, settings or variables: dropped here.
            _ => Warm::new(key),
        };
        // Its host calls count against the warm context's own meter.
        let meter = warm.as_ref().map_or(&self.meter, |w| &w.engine.meter);
        let exec = Rc::new(Exec::new(
            invocation.host.clone(),
            handle,
            invocation.limits.log,
            invocation.limits.memory,
            meter.clone(),
        ));
        let (result, keep) = match warm {
            Ok(mut warm) => {
                let result = warm.run(&exec, invocation, start, cancelled);
                let keep = (result.is_ok() && warm.reusable(&exec)).then_some(warm);
                (result, keep)
            }
            Err(_) => (Err(Failure::MemoryLimit), None),
        };
        exec.stop_host_calls();
        if let Some(warm) = keep {
            // Cycles the guest left as garbage go before they count against
            // its next execution, once they are a sizeable part of its limit.
            if warm.bytes() > warm.engine.meter.limit.get() / 2 {
                warm.engine.runtime.run_gc();
            }
            self.keep_warm(warm);
        }
        Outcome {
            result,
            logs: exec.logs.take(),
            errors: exec.errors.take(),
            logs_truncated: exec.truncated.get(),
            duration: start.elapsed(),
        }
    }

    /// Keeps `warm` as the most recently used, within the thread's bounds.
    fn keep_warm(&mut self, warm: Warm) {
        self.warm.push(warm);
        while self.warm.len() > WARM_CONTEXTS {
            self.warm.remove(0);
        }
        while self.warm.len() > 1 && self.warm.iter().map(Warm::bytes).sum::<usize>() > WARM_BYTES {
            self.warm.remove(0);
        }
    }

    /// Runs one execution to its end.
    pub fn execute(
        &mut self,
        invocation: super::Invocation,
        handle: Option<Handle>,
        cancelled: Option<Box<dyn Watch>>,
    ) -> Outcome {
        if let Some(key) = invocation.warm.clone() {
            return self.execute_warm(key, invocation, handle, cancelled);
        }
        let start = Instant::now();
        let limits = invocation.limits.clone();
        self.set_limits(&limits);
        self.shared.arm(start, &limits, cancelled);
        *self.shared.program.borrow_mut() = Some(invocation.program.bytes.clone());
        let exec = Rc::new(Exec::new(
            invocation.host.clone(),
            handle,
            limits.log,
            limits.memory,
            self.meter.clone(),
        ));
        let spare = self.spare.take();
        let made = match spare {
            Some(Spare { api, context }) => Ok((context, Some(api))),
            None => Context::full(&self.runtime).map(|context| (context, None)),
        };
        let result = match made {
            Ok((context, api)) => context.with(|ctx| {
                let api = match api.map(|api| api.restore(&ctx)) {
                    Some(Ok(api)) => Some(api),
                    Some(Err(_)) => {
                        return Err(Failure::InvalidResponse(
                            "the engine could not start".into(),
                        ));
                    }
                    None => None,
                };
                self.run(
                    &ctx,
                    &exec,
                    &limits,
                    &invocation.program.bytes,
                    &invocation.env,
                    invocation.request,
                    api,
                )
            }),
            Err(_) => Err(Failure::MemoryLimit),
        };
        exec.stop_host_calls();
        self.shared.disarm();
        self.recycle(&result);
        // The dropped context's cycles (functions hold their realm) go now, not
        // against the next execution's memory limit.
        self.runtime.run_gc();
        Outcome {
            result,
            logs: exec.logs.take(),
            errors: exec.errors.take(),
            logs_truncated: exec.truncated.get(),
            duration: start.elapsed(),
        }
    }

    /// Loads a freshly compiled program once, with no host, to check that its
    /// imports link, its top-level code runs and its entrypoint has a default
    /// export that is a function. Errors are `(message, module, line)`.
    pub fn check(
        &mut self,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<(), (String, Option<String>, Option<u32>)> {
        let bundle = Bundle::parse(bytes).map_err(|m| (m, None, None))?;
        let names: Vec<String> = bundle.modules.keys().map(|s| s.to_string()).collect();
        let entry = bundle.entry.to_string();
        self.set_limits(limits);
        self.shared.arm(Instant::now(), limits, None);
        *self.shared.program.borrow_mut() = Some(bytes.into());
        let exec = Rc::new(Exec::new(Arc::new(NoHost), None, 0, 0, self.meter.clone()));
        let result = match Context::full(&self.runtime) {
            Ok(context) => context.with(|ctx| {
                let failed = |caught: Caught| {
                    let stack = caught.stack.as_deref().unwrap_or("");
                    let (module, line) =
                        locate(stack, &names).map_or((None, None), |(n, l)| (Some(n), Some(l)));
                    (caught.message, module, line)
                };
                let api = self
                    .api(
                        &ctx,
                        &Slot::holding(&exec),
                        limits,
                        &std::collections::BTreeMap::new(),
                        None,
                    )
                    .map_err(|f| (f.describe(), None, None))?;
                let module = match self.load_entry(&ctx, &exec, &api, bytes) {
                    Ok(module) => module,
                    Err(Loaded::Failed(failure)) => return Err((failure.describe(), None, None)),
                    Err(Loaded::Threw(c)) => return Err(failed(c)),
                };
                let ok = module
                    .namespace()
                    .and_then(|ns| api.has_default.call::<_, bool>((ns,)))
                    .unwrap_or(false);
                if ok {
                    Ok(())
                } else {
                    Err((
                        format!(
                            "the entrypoint '{entry}' has no default export that is a function"
                        ),
                        Some(entry.clone()),
                        None,
                    ))
                }
            }),
            Err(_) => Err(("the engine ran out of memory".into(), None, None)),
        };
        exec.stop_host_calls();
        self.shared.disarm();
        // A check that failed may have been interrupted half-way.
        if result.is_err() || jobs_pending(&self.runtime) {
            self.renew();
        }
        result
    }

    fn fail(&self, ctx: &Ctx<'_>, error: rquickjs::Error) -> Failure {
        if let Some(abort) = self.shared.abort.get() {
            let _ = ctx.catch();
            return abort.failure();
        }
        let caught = caught(ctx, error);
        self.classify(caught)
    }

    fn classify(&self, caught: Caught) -> Failure {
        if let Some(abort) = self.shared.abort.get() {
            return abort.failure();
        }
        // An uncaught failure after the allocator refused is the memory limit,
        // whatever QuickJS managed to throw for it.
        if caught.out_of_memory || self.meter.refused.get() {
            return Failure::MemoryLimit;
        }
        if caught.stack_overflow {
            return Failure::StackOverflow;
        }
        let mut text = caught.message;
        if let Some(stack) = caught.stack {
            text.push('\n');
            text.push_str(stack.trim_end());
        }
        Failure::Thrown(text)
    }

    /// Builds the guest API in the fresh context: its module evaluated now, or
    /// already (`prepared`, the namespace of a spare context's).
    fn api<'js>(
        &self,
        ctx: &Ctx<'js>,
        slot: &Rc<Slot>,
        limits: &Limits,
        env: &std::collections::BTreeMap<String, String>,
        prepared: Option<Object<'js>>,
    ) -> Result<Api<'js>, Failure> {
        let fail = |e| self.fail(ctx, e);
        let ns = match prepared {
            Some(ns) => ns,
            None => {
                // SAFETY: the prelude's bytecode was written by this engine in this process.
                let module = unsafe { Module::load(ctx.clone(), prelude()) }.map_err(fail)?;
                let (module, promise) = module.eval().map_err(fail)?;
                run_jobs(ctx).map_err(fail)?;
                if promise.state() != PromiseState::Resolved {
                    return Err(Failure::InvalidResponse(
                        "the engine could not start".into(),
                    ));
                }
                module.namespace().map_err(fail)?
            }
        };
        let setup: Function = ns.get("setup").map_err(fail)?;
        let natives = natives(ctx, slot).map_err(fail)?;
        let env_object = Object::new(ctx.clone()).map_err(fail)?;
        for (name, value) in env {
            env_object
                .set(name.as_str(), value.as_str())
                .map_err(fail)?;
        }
        let limit_object = Object::new(ctx.clone()).map_err(fail)?;
        limit_object
            .set("response", limits.response as f64)
            .map_err(fail)?;
        let context: Object = setup
            .call((natives, env_object, limit_object))
            .map_err(fail)?;
        Ok(Api {
            invoke: ns.get("invoke").map_err(fail)?,
            settle: ns.get("settle").map_err(fail)?,
            has_default: ns.get("hasDefaultFunction").map_err(fail)?,
            context,
        })
    }

    fn load_entry<'js>(
        &self,
        ctx: &Ctx<'js>,
        exec: &Exec,
        api: &Api<'js>,
        bytes: &[u8],
    ) -> Result<Module<'js, Evaluated>, Loaded> {
        let bundle =
            Bundle::parse(bytes).map_err(|m| Loaded::Failed(Failure::InvalidResponse(m)))?;
        let threw = |e: rquickjs::Error| -> Loaded {
            if let Some(abort) = self.shared.abort.get() {
                let _ = ctx.catch();
                return Loaded::Failed(abort.failure());
            }
            let c = caught(ctx, e);
            if c.out_of_memory || c.stack_overflow || self.meter.refused.get() {
                Loaded::Failed(self.classify(c))
            } else {
                Loaded::Threw(c)
            }
        };
        let code = bundle
            .modules
            .get(bundle.entry)
            .copied()
            .unwrap_or_default();
        // SAFETY: see `BundleLoader::load`.
        let module = unsafe { Module::load(ctx.clone(), code) }.map_err(threw)?;
        let (module, promise) = module.eval().map_err(threw)?;
        match self.drive(ctx, exec, api, &promise) {
            Ok(_) => Ok(module),
            Err(Driven::Rejected(e)) => Err(threw(e)),
            Err(Driven::Failed(f)) => Err(Loaded::Failed(f)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run<'js>(
        &self,
        ctx: &Ctx<'js>,
        exec: &Rc<Exec>,
        limits: &Limits,
        bytes: &[u8],
        env: &std::collections::BTreeMap<String, String>,
        request: Request,
        prepared: Option<Object<'js>>,
    ) -> Result<Response, Failure> {
        let api = self.api(ctx, &Slot::holding(exec), limits, env, prepared)?;
        let module = self
            .load_entry(ctx, exec, &api, bytes)
            .map_err(|l| match l {
                Loaded::Failed(f) => f,
                Loaded::Threw(c) => self.classify(c),
            })?;
        let ns = module.namespace().map_err(|e| self.fail(ctx, e))?;
        self.respond(ctx, exec, limits, &api, ns, request)
    }

    /// Calls the entrypoint's handler (`ns.default`) with the request and turns
    /// what it settles to into the response.
    fn respond<'js>(
        &self,
        ctx: &Ctx<'js>,
        exec: &Exec,
        limits: &Limits,
        api: &Api<'js>,
        ns: Object<'js>,
        request: Request,
    ) -> Result<Response, Failure> {
        let fail = |e| self.fail(ctx, e);
        let promise: Promise = invoke_args(ctx, ns, api.context.clone(), request)
            .and_then(|args| api.invoke.call_arg(args))
            .map_err(fail)?;
        let value = self.drive(ctx, exec, api, &promise).map_err(|d| match d {
            Driven::Failed(f) => f,
            Driven::Rejected(e) => self.fail(ctx, e),
        })?;
        response(ctx, value, limits.response).map_err(|e| match e {
            Shaped::Failure(f) => f,
            // A getter of the guest's threw, or an interrupt came.
            Shaped::Js(e) if e.is_exception() => self.fail(ctx, e),
            Shaped::Js(_) => self.shared.abort.get().map_or_else(
                || Failure::InvalidResponse("the response is malformed".into()),
                Abort::failure,
            ),
        })
    }

    /// Runs jobs, host answers and timers until `promise` settles, or nothing
    /// is left that could settle it.
    fn drive<'js>(
        &self,
        ctx: &Ctx<'js>,
        exec: &Exec,
        api: &Api<'js>,
        promise: &Promise<'js>,
    ) -> Result<Value<'js>, Driven> {
        let failed = |e| Driven::Failed(self.fail(ctx, e));
        loop {
            run_jobs(ctx).map_err(failed)?;
            if let Some(abort) = self.shared.abort.get() {
                return Err(Driven::Failed(abort.failure()));
            }
            match promise.state() {
                PromiseState::Resolved => {
                    return promise
                        .result::<Value>()
                        .unwrap_or(Err(rquickjs::Error::Unknown))
                        .map_err(failed);
                }
                PromiseState::Rejected => {
                    let e = promise
                        .result::<Value>()
                        .map(|r| r.err().unwrap_or(rquickjs::Error::Unknown))
                        .unwrap_or(rquickjs::Error::Unknown);
                    return Err(Driven::Rejected(e));
                }
                PromiseState::Pending => {}
            }
            let now = Instant::now();
            if let Some(id) = exec.due_timer(now) {
                exec.hand_off();
                api.settle
                    .call::<_, ()>((id, true, rquickjs::Undefined))
                    .map_err(failed)?;
                continue;
            }
            if exec.calls.borrow().is_empty() && exec.timers.borrow().is_empty() {
                return Err(Driven::Failed(Failure::NeverSettled));
            }
            let wall = self.shared.wall_deadline.get();
            if now >= wall {
                return Err(Driven::Failed(Failure::Timeout));
            }
            if self.shared.is_cancelled() {
                return Err(Driven::Failed(Failure::Timeout));
            }
            let mut until = wall.min(now + CANCEL_POLL);
            if let Some(next) = exec.next_timer() {
                until = until.min(next);
            }
            self.shared.waiting(true);
            let answer = exec.wait(until);
            self.shared.waiting(false);
            self.shared.credit(now.elapsed());
            if let Some((id, answer)) = answer
                && exec.end_call(id)
            {
                exec.hand_off();
                // Copied into the engine next, where the meter counts it.
                exec.held.give_back(answer.held_bytes());
                deliver(ctx, api, id, answer).map_err(failed)?;
            }
        }
    }
}

enum Driven {
    Failed(Failure),
    Rejected(rquickjs::Error),
}

enum Loaded {
    Failed(Failure),
    Threw(Caught),
}

enum Shaped {
    Failure(Failure),
    Js(rquickjs::Error),
}

impl From<rquickjs::Error> for Shaped {
    fn from(e: rquickjs::Error) -> Self {
        Shaped::Js(e)
    }
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Thrown(m) | Failure::InvalidResponse(m) => m.clone(),
            Failure::CpuLimit => "the top-level code ran out of CPU time".into(),
            Failure::Timeout => "the top-level code ran out of time".into(),
            Failure::MemoryLimit => "the top-level code ran out of memory".into(),
            Failure::StackOverflow => "the top-level code overflowed the stack".into(),
            Failure::NeverSettled => {
                "the top-level code awaits something that never settles".into()
            }
            Failure::ResponseTooLarge => "the response is too large".into(),
            Failure::Crashed => "the engine failed".into(),
        }
    }
}

/// A host for checking programs: there is nothing to reach.
struct NoHost;

impl Host for NoHost {
    fn fetch(
        &self,
        _request: FetchRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<FetchResponse, String>> {
        Box::pin(async { Err("the host is not reachable here".to_string()) })
    }

    fn graphql(
        &self,
        _query: String,
        _variables: String,
    ) -> futures_util::future::BoxFuture<'static, String> {
        Box::pin(async { "null".to_string() })
    }
}

/// Calls `read` with a guest value's bytes where they are, with no copy of the
/// host's: an ArrayBuffer's own, or a string's UTF-8 as QuickJS writes it (in
/// its own heap, for a string that is not ASCII; with a lone surrogate as its
/// three bytes, see [`replace_lone_surrogates`]). Anything else, or a detached
/// buffer, is no bytes.
///
/// # Safety
///
/// `read` must not run JavaScript, which could change or detach the buffer.
unsafe fn with_bytes<R>(value: &Value<'_>, read: impl FnOnce(&[u8]) -> R) -> rquickjs::Result<R> {
    if let Some(text) = value.as_string() {
        // A failure leaves QuickJS's exception (out of memory) pending.
        let utf8 = text
            .clone()
            .to_cstring()
            .map_err(|_| rquickjs::Error::Exception)?;
        // SAFETY: `utf8` owns `len` bytes at `as_ptr` until it is dropped.
        // They are read as bytes, not as `str`: a lone surrogate makes them
        // invalid UTF-8.
        let bytes = unsafe { std::slice::from_raw_parts(utf8.as_ptr().cast::<u8>(), utf8.len()) };
        return Ok(read(bytes));
    }
    let buffer = ArrayBuffer::from_value(value.clone());
    // SAFETY: the caller's `read` runs no JavaScript.
    let bytes = buffer.as_ref().and_then(|b| unsafe { b.as_bytes() });
    Ok(read(bytes.unwrap_or_default()))
}

/// `TextEncoder.encode`: the text as UTF-8 in a new ArrayBuffer. The buffer
/// is allocated by the engine, so it counts against the memory limit; one
/// made by Rust would be handed over with its own free and never be counted.
fn encode<'js>(ctx: &Ctx<'js>, text: rquickjs::String<'js>) -> rquickjs::Result<ArrayBuffer<'js>> {
    // SAFETY: making the buffer only allocates.
    let buffer = unsafe {
        with_bytes(text.as_value(), |utf8| {
            ArrayBuffer::new_copy(ctx.clone(), utf8)
        })
    }??;
    if let Some(raw) = buffer.as_raw() {
        // SAFETY: the buffer is new and no JavaScript has seen it yet.
        replace_lone_surrogates(unsafe { &mut *raw.as_ptr() });
    }
    Ok(buffer)
}

/// Rewrites each lone surrogate in QuickJS's UTF-8 of a string, which it
/// writes as the surrogate's own three bytes (`ED A0..BF 80..BF`), as U+FFFD
/// (`EF BF BD`, as long), as `TextEncoder` and `fetch` write a string. A
/// surrogate pair is already one four-byte character; valid UTF-8 is left as
/// it is, after one check.
fn replace_lone_surrogates(utf8: &mut [u8]) {
    // Most text is ASCII, which is checked faster than UTF-8 is validated.
    if utf8.is_ascii() {
        return;
    }
    let Err(invalid) = std::str::from_utf8(utf8) else {
        return;
    };
    let mut at = invalid.valid_up_to();
    while at + 2 < utf8.len() {
        if utf8[at] == 0xED && (0xA0..=0xBF).contains(&utf8[at + 1]) {
            utf8[at..at + 3].copy_from_slice("\u{FFFD}".as_bytes());
            at += 3;
        } else {
            at += 1;
        }
    }
}

/// `TextDecoder.decode`: the bytes of an ArrayBuffer as UTF-8, each invalid
/// sequence a U+FFFD, read where they are and written straight into a string
/// of the engine's (empty for anything else, or a detached buffer).
fn decode<'js>(ctx: &Ctx<'js>, bytes: &Value<'js>) -> rquickjs::Result<rquickjs::String<'js>> {
    let buffer = ArrayBuffer::from_value(bytes.clone());
    // SAFETY: no JavaScript runs while the slice is read: making the string
    // only allocates (a collection it starts runs no guest code, and the
    // buffer is held).
    let bytes = buffer
        .as_ref()
        .and_then(|b| unsafe { b.as_bytes() })
        .unwrap_or_default();
    rquickjs::String::from_str(ctx.clone(), &String::from_utf8_lossy(bytes))
}

/// The guest API's natives; each acts for the execution in `slot` when called.
fn natives<'js>(ctx: &Ctx<'js>, slot: &Rc<Slot>) -> rquickjs::Result<Object<'js>> {
    let o = Object::new(ctx.clone())?;
    let slot_ = slot.clone();
    o.set(
        "log",
        Function::new(
            ctx.clone(),
            // Taken as the engine's string, not converted to a Rust one: a lone
            // surrogate (text cut inside an emoji) is logged as U+FFFD, as
            // `TextEncoder` writes it, rather than making the call throw.
            move |ctx: Ctx<'js>, stream: i32, text: rquickjs::String<'js>| {
                // SAFETY: reading the bytes runs no JavaScript.
                let mut utf8 = unsafe { with_bytes(text.as_value(), <[u8]>::to_vec) }?;
                replace_lone_surrogates(&mut utf8);
                Ok::<_, rquickjs::Error>(
                    slot_
                        .exec(&ctx)?
                        .log(stream, &String::from_utf8_lossy(&utf8)),
                )
            },
        )?,
    )?;
    let slot_ = slot.clone();
    o.set(
        "fetch",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, method: String, url: String, headers: String, body: Value<'js>| {
                let headers: Vec<(String, String)> =
                    serde_json::from_str(&headers).map_err(|_| {
                        Exception::throw_type(&ctx, "fetch: headers must be name/value pairs")
                    })?;
                let exec = slot_.exec(&ctx)?;
                let text = body.is_string();
                let start = |bytes: &[u8]| {
                    exec.start(&ctx, Where::Runtime, bytes.len(), |host| {
                        let mut body = bytes.to_vec();
                        if text {
                            replace_lone_surrogates(&mut body);
                        }
                        let call = host.fetch(FetchRequest {
                            held: exec.held.clone(),
                            method,
                            url,
                            headers,
                            body: Bytes::from(body),
                        });
                        Box::pin(async move { Answer::Fetch(call.await) })
                    })
                };
                // SAFETY: starting the call copies the body and runs no JavaScript.
                unsafe { with_bytes(&body, start) }?
            },
        )?,
    )?;
    let slot_ = slot.clone();
    o.set(
        "graphql",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, query: String, variables: Value<'js>| {
                let variables = match super::json::plain_json(&ctx, &variables)? {
                    Some(text) => text,
                    None => match ctx.json_stringify(variables)? {
                        Some(text) => text.to_string()?,
                        None => {
                            return Err(Exception::throw_type(
                                &ctx,
                                "nimbus.graphql: the variables are not JSON",
                            ));
                        }
                    },
                };
                let held = query.len() + variables.len();
                let exec = slot_.exec(&ctx)?;
                let answers = exec.held.clone();
                exec.start(&ctx, Where::Here, held, move |host| {
                    let call = host.graphql(query, variables);
                    Box::pin(async move {
                        let text = call.await;
                        if answers.take(text.len()) {
                            Answer::Graphql(text)
                        } else {
                            Answer::Refused(format!(
                                "nimbus.graphql: the answer ({} bytes) does not fit under the function's memory limit",
                                text.len()
                            ))
                        }
                    })
                })
            },
        )?,
    )?;
    let slot_ = slot.clone();
    o.set(
        "timer",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, ms: f64| {
            slot_.exec(&ctx)?.timer(&ctx, ms)
        })?,
    )?;
    let slot_ = slot.clone();
    o.set(
        "cancel",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, id: u32| {
            slot_.exec(&ctx).map(|exec| exec.cancel_timer(id))
        })?,
    )?;
    o.set(
        "decode",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, bytes: Value<'js>| {
            decode(&ctx, &bytes)
        })?,
    )?;
    o.set(
        "encode",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, text: rquickjs::String<'js>| encode(&ctx, text),
        )?,
    )?;
    Ok(o)
}

fn deliver<'js>(ctx: &Ctx<'js>, api: &Api<'js>, id: u32, answer: Answer) -> rquickjs::Result<()> {
    match answer {
        Answer::Fetch(Ok(response)) => {
            let o = Object::new(ctx.clone())?;
            o.set("status", response.status as i32)?;
            o.set("url", response.url)?;
            o.set("headers", pairs(ctx, &response.headers)?)?;
            o.set("body", ArrayBuffer::new_copy(ctx.clone(), &response.body)?)?;
            api.settle.call((id, true, o))
        }
        Answer::Fetch(Err(message)) | Answer::Refused(message) => {
            api.settle.call((id, false, message))
        }
        // Parsed here rather than by the guest API's `JSON.parse`: the promise
        // settles with the value, with no call into JavaScript to make it.
        Answer::Graphql(text) => match ctx.json_parse(text) {
            Ok(value) => api.settle.call((id, true, value)),
            Err(rquickjs::Error::Exception) => {
                let thrown = ctx.catch();
                api.settle.call((id, false, thrown))
            }
            Err(err) => Err(err),
        },
    }
}

fn pairs<'js>(ctx: &Ctx<'js>, list: &[(String, String)]) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, (name, value)) in list.iter().enumerate() {
        let pair = Array::new(ctx.clone())?;
        pair.set(0, name.as_str())?;
        pair.set(1, value.as_str())?;
        array.set(i, pair)?;
    }
    Ok(array)
}

/// The guest API's `invoke` arguments: the entrypoint's namespace, the context,
/// then the request's parts one by one (no object with named keys to build).
fn invoke_args<'js>(
    ctx: &Ctx<'js>,
    namespace: Object<'js>,
    context: Object<'js>,
    request: Request,
) -> rquickjs::Result<Args<'js>> {
    let mut args = Args::new(ctx.clone(), 10);
    args.push_arg(namespace)?;
    args.push_arg(context)?;
    args.push_arg(request.method)?;
    args.push_arg(request.scheme)?;
    args.push_arg(request.host)?;
    args.push_arg(request.port as i32)?;
    args.push_arg(request.path)?;
    args.push_arg(request.query_string)?;
    args.push_arg(header_list(ctx, request.headers)?)?;
    args.push_arg(ArrayBuffer::new_copy(ctx.clone(), &request.body)?)?;
    Ok(args)
}

/// The request's headers as the guest API takes them: flat (name, value, …),
/// names lower-cased, a repeated name given once with its values joined by
/// `, ` in the order they came.
fn header_list<'js>(
    ctx: &Ctx<'js>,
    headers: Vec<(String, String)>,
) -> rquickjs::Result<Array<'js>> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = if name
            .bytes()
            .any(|b| !b.is_ascii_lowercase() && !b.is_ascii_digit() && b != b'-')
        {
            name.to_lowercase()
        } else {
            name
        };
        match merged.iter_mut().find(|(seen, _)| *seen == name) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    let array = Array::new(ctx.clone())?;
    for (i, (name, value)) in merged.into_iter().enumerate() {
        array.set(2 * i, name)?;
        array.set(2 * i + 1, value)?;
    }
    Ok(array)
}

/// The guest's `res.*` result as a [`Response`], checked.
fn response<'js>(ctx: &Ctx<'js>, value: Value<'js>, limit: usize) -> Result<Response, Shaped> {
    let _ = ctx;
    let invalid = |m: String| Shaped::Failure(Failure::InvalidResponse(m));
    if let Some(message) = value.as_string() {
        return Err(invalid(message.to_string()?));
    }
    // The guest API's `[status, headers, body, tooLarge]`.
    let answer = value
        .into_array()
        .ok_or_else(|| invalid("no response".into()))?;
    if answer.get::<bool>(3)? {
        return Err(Shaped::Failure(Failure::ResponseTooLarge));
    }
    let status: Value = answer.get(0)?;
    let status = status
        .as_number()
        .filter(|s| s.fract() == 0.0 && (100.0..=599.0).contains(s))
        .ok_or_else(|| invalid("the status must be an integer from 100 to 599".into()))?
        as u16;
    let raw: Vec<Vec<String>> = answer.get(1)?;
    let mut headers = Vec::with_capacity(raw.len());
    let mut size = 0usize;
    for pair in raw {
        let [name, value]: [String; 2] = pair
            .try_into()
            .map_err(|_| invalid("a header is not a name and a value".into()))?;
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(format!("'{name}' is not a valid header name")));
        }
        if axum::http::HeaderValue::from_str(&value).is_err() {
            return Err(invalid(format!(
                "the value of header '{name}' is not valid"
            )));
        }
        size += name.len() + value.len();
        headers.push((name.to_ascii_lowercase(), value));
    }
    let body: Value = answer.get(2)?;
    if let Some(buffer) = ArrayBuffer::from_value(body.clone())
        && buffer.len() + size > limit
    {
        return Err(Shaped::Failure(Failure::ResponseTooLarge));
    }
    // SAFETY: copying runs no JavaScript.
    let body = unsafe {
        with_bytes(&body, |bytes| {
            let mut copy = bytes.to_vec();
            if body.is_string() {
                replace_lone_surrogates(&mut copy);
            }
            copy
        })
    }?;
    if body.len() + size > limit {
        return Err(Shaped::Failure(Failure::ResponseTooLarge));
    }
    Ok(Response {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// Bytes of an idle engine, and the peak of one hello-world execution on it.
#[cfg(test)]
pub(crate) fn memory_figures(invocation: super::Invocation) -> (usize, usize) {
    let mut worker = Worker::new().expect("the engine starts");
    let (idle, _) = worker.memory();
    let outcome = worker.execute(invocation, None, None);
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    (idle, worker.memory().1)
}

/// One execution on an engine of its own, with no host: its outcome, and the
/// most the engine's meter counted during it.
#[cfg(test)]
pub(crate) fn run_metered(invocation: super::Invocation) -> (Outcome, usize) {
    let mut worker = Worker::new().expect("the engine starts");
    // Held apart: an execution that fails replaces the worker's engine.
    let meter = worker.meter.clone();
    let outcome = worker.execute(invocation, None, None);
    (outcome, meter.peak.get())
}

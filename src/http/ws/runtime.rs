//! The runtime that serves upgraded WebSocket connections, apart from the one
//! that serves requests. A fan-out wakes every subscriber's task; on the request
//! runtime those wake-ups queue in front of a write's next step, and an update made
//! while one event reaches 10,000 subscribers waited tens of milliseconds at p99.
//! Here the sockets' tasks run on threads of their own, which the operating system
//! schedules after the request threads when both want a core (Linux: nice +10 by
//! default, `NIMBUS_WS_THREAD_NICENESS`), so a fan-out takes the cores requests
//! leave idle. Apart but at the same priority does not do it: the kernel then
//! shares the cores evenly, and the write waited as long as before.
//!
//! One runtime per process, started with the first socket and kept until the
//! process ends: its tasks outlive any request, and dropping a runtime inside
//! another's context is not allowed. A socket's I/O stays registered with the
//! request runtime's reactor, which wakes its task here.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::runtime::{Builder, Runtime};

/// How much less the sockets' threads weigh than the request threads by default:
/// nice +10 gives a thread about a tenth of a contended core's time beside one at 0.
const NICENESS: libc::c_int = 10;

/// The niceness the sockets' threads take when they start.
static CONFIGURED_NICENESS: AtomicI32 = AtomicI32::new(NICENESS);

/// The highest niceness Linux has.
const LOWEST_PRIORITY: libc::c_int = 19;
/// The lowest.
const HIGHEST_PRIORITY: libc::c_int = -20;

/// The sockets' runtime, started on first use; `None` when its threads could not
/// be started (the sockets are then served on the caller's runtime).
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, usize::from);
            Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("nimbus-sockets")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .inspect_err(|err| {
                    tracing::error!(error = %err, "cannot start the WebSocket threads; sockets are served beside requests")
                })
                .ok()
        })
        .as_ref()
}

/// Sets the niceness the sockets' threads will take (`NIMBUS_WS_THREAD_NICENESS`);
/// once the first socket has started them, a later call changes nothing.
pub fn configure(niceness: u8) {
    CONFIGURED_NICENESS.store(i32::from(niceness), Ordering::Relaxed);
}

/// Runs `task` on the sockets' runtime.
pub fn spawn<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match runtime() {
        Some(runtime) => drop(runtime.spawn(task)),
        None => drop(tokio::spawn(task)),
    }
}

/// Lowers the calling thread's scheduling priority to the configured niceness
/// above the process's (its main thread's); a failure leaves it as it was. From
/// the process's, not the thread's own: a thread inherits its creator's niceness,
/// and the runtime's blocking threads are created by its already lowered ones.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: getpid, gettid, getpriority and setpriority take no pointers; on
    // Linux a thread id names that thread alone for PRIO_PROCESS, and the main
    // thread's id is the process's.
    unsafe {
        let niceness = CONFIGURED_NICENESS.load(Ordering::Relaxed);
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let lowered = lowered_niceness(niceness);
        if libc::getpriority(libc::PRIO_PROCESS, thread) != lowered
            && libc::setpriority(libc::PRIO_PROCESS, thread, lowered) != 0
        {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "the WebSocket threads keep the request threads' priority"
            );
        }
    }
}

/// The niceness `niceness` above the process's, within what Linux has.
#[cfg(target_os = "linux")]
fn lowered_niceness(niceness: libc::c_int) -> libc::c_int {
    // SAFETY: getpid and getpriority take no pointers.
    let process = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t) };
    (process + niceness).clamp(HIGHEST_PRIORITY, LOWEST_PRIORITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's name and niceness.
    fn thread_and_niceness() -> (Option<String>, libc::c_int) {
        let name = std::thread::current().name().map(str::to_string);
        #[cfg(target_os = "linux")]
        // SAFETY: reads the calling thread's priority; no pointers.
        let niceness = unsafe {
            libc::getpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
            )
        };
        #[cfg(not(target_os = "linux"))]
        let niceness = NICENESS;
        (name, niceness)
    }

    #[test]
    fn socket_tasks_and_their_blocking_work_run_on_threads_of_their_own_at_a_lower_priority() {
        let (sent, received) = std::sync::mpsc::channel();
        spawn(async move {
            let worker = thread_and_niceness();
            // Created by a lowered worker, a blocking thread must not be lowered twice.
            let blocking = tokio::task::spawn_blocking(thread_and_niceness).await;
            let _ = sent.send((worker, blocking));
        });
        let (worker, blocking) = received
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        let blocking = blocking.unwrap();
        assert_eq!(worker.0.as_deref(), Some("nimbus-sockets"));
        assert_eq!(blocking.0.as_deref(), Some("nimbus-sockets"));
        #[cfg(target_os = "linux")]
        {
            let expected = lowered_niceness(NICENESS);
            assert_eq!(worker.1, expected);
            assert_eq!(blocking.1, expected);
        }
    }
}

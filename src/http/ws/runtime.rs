//! The runtime that serves upgraded WebSocket connections, apart from the one
//! that serves requests. A fan-out wakes every subscriber's task; on the request
//! runtime those wake-ups queue in front of a write's next step, and an update made
//! while one event reaches 10,000 subscribers waited tens of milliseconds at p99.
//! Here the sockets' tasks run on threads of their own, which the operating system
//! schedules after the request threads when both want a core (Linux: nice +10),
//! so a fan-out takes the cores requests leave idle and never delays a request by
//! more than the kernel's preemption.
//!
//! One runtime per process, started with the first socket and kept until the
//! process ends: its tasks outlive any request, and dropping a runtime inside
//! another's context is not allowed. A socket's I/O stays registered with the
//! request runtime's reactor, which wakes its task here.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// How much less the sockets' threads weigh than the request threads: nice +10
/// gives a thread about a tenth of a contended core's time beside one at 0.
const NICENESS: libc::c_int = 10;

/// The highest niceness Linux has.
const LOWEST_PRIORITY: libc::c_int = 19;

/// The sockets' runtime, started on first use.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("nimbus-sockets")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .unwrap_or_else(|err| panic!("cannot start the WebSocket runtime: {err}"))
    })
}

/// Where socket tasks are spawned.
pub fn handle() -> &'static Handle {
    runtime().handle()
}

/// Lowers the calling thread's scheduling priority by [`NICENESS`] below the
/// process's; a failure leaves it as it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid, getpriority and setpriority take no pointers; on Linux a
    // thread id names that thread alone for PRIO_PROCESS.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, thread);
        let lowered = (current.max(0) + NICENESS).min(LOWEST_PRIORITY);
        if libc::setpriority(libc::PRIO_PROCESS, thread, lowered) != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "the WebSocket threads keep the request threads' priority"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_tasks_run_on_threads_of_their_own_at_a_lower_priority() {
        let (thread, niceness) = handle()
            .block_on(async {
                handle()
                    .spawn(async {
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
                    })
                    .await
            })
            .unwrap();
        assert_eq!(thread.as_deref(), Some("nimbus-sockets"));
        assert!(
            niceness >= NICENESS.min(LOWEST_PRIORITY),
            "niceness {niceness}"
        );
    }
}

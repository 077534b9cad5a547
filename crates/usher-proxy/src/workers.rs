//! Thread-per-core serving: `--threads N` runs N single-threaded tokio runtimes, each on its own
//! OS thread, and the accept loop hands every new connection to the next one in turn. A
//! connection then lives on one thread for good: its socket, its upstream connections and its
//! wake-ups never cross threads, which is what HAProxy's threads and NGINX's workers do too. On
//! this project's 2-core test machine a single-threaded runtime served the same proxy ~15–20 %
//! cheaper per request than tokio's work-stealing runtime with one worker.
//!
//! The thread that calls [`Workers::start`] is worker 0 (it runs the accept loop, the admin API
//! and health checks next to its share of connections); the others are started here.

use std::cell::Cell;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The serving worker the current thread is (0 outside any extra worker).
pub(crate) fn current_index() -> usize {
    INDEX.with(Cell::get)
}

/// The extra serving threads of one load balancer.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `total - 1` extra single-threaded runtimes (the caller's runtime is worker 0).
    /// Must be called from within the caller's runtime.
    pub fn start(total: usize) -> std::io::Result<Self> {
        let mut workers = Self {
            handles: vec![Handle::current()],
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 1..total.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("usher-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// One handle per serving thread, worker 0 first.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops the extra threads (after [`crate::serve_on`] has returned) and waits for them.
    pub fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

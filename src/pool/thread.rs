//! The worker threads of a run: plain threads, named, joined on shutdown.

use std::thread::JoinHandle;

/// `count` threads running `body(i)`; [`WorkerThreads::join`] waits for them.
pub(crate) struct WorkerThreads {
    handles: Vec<JoinHandle<()>>,
}

impl WorkerThreads {
    pub(crate) fn spawn<F>(count: usize, body: F) -> std::io::Result<Self>
    where
        F: Fn(usize) + Send + Clone + 'static,
    {
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let body = body.clone();
            let handle = std::thread::Builder::new()
                .name(format!("pexen-worker-{i}"))
                .spawn(move || body(i))?;
            handles.push(handle);
        }
        Ok(Self { handles })
    }

    /// Waits for every thread; each returns once the run has no more work for it.
    pub(crate) fn join(&mut self) {
        for h in self.handles.drain(..) {
            // A worker only panics if pexen itself is broken; the run still ends.
            let _ = h.join();
        }
    }
}

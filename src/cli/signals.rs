//! The signal thread of the CLI's long commands (`run`, `teleport`): the signals are taken from
//! their default actions while the watch lives, and each one received is handed to a closure on
//! a thread of its own, where blocking is harmless.

use signal_hook::iterator::{Handle, Signals};

pub(super) struct SignalWatch {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatch {
    /// Calls `on_signal` with each of `signals` as it arrives, until the watch is dropped.
    /// `None` if the signals cannot be caught or the thread cannot start (the defaults apply).
    pub(super) fn start(
        signals: &[std::ffi::c_int],
        mut on_signal: impl FnMut(std::ffi::c_int) + Send + 'static,
    ) -> Option<Self> {
        let mut signals = Signals::new(signals).ok()?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("pexen-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    on_signal(signal);
                }
            })
            .ok()?;
        Some(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

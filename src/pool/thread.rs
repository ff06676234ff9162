//! The worker threads of a run: each takes one job at a time and reports back.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::{ChannelSink, Executor, Job, WorkerMsg};

/// `jobs` threads running attempts. Dropping the job sender (via [`WorkerThreads::join`]) ends
/// them.
pub(crate) struct WorkerThreads {
    jobs: Option<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl WorkerThreads {
    pub(crate) fn spawn(
        count: usize,
        exec: &Arc<Executor>,
        msgs: &Sender<WorkerMsg>,
    ) -> std::io::Result<Self> {
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let job_rx: Receiver<Job> = job_rx.clone();
            let msgs = msgs.clone();
            let exec = exec.clone();
            let handle = std::thread::Builder::new()
                .name(format!("pexen-worker-{i}"))
                .spawn(move || {
                    while let Ok(job) = job_rx.recv() {
                        let sink = ChannelSink {
                            tx: &msgs,
                            idx: job.idx,
                            attempt: job.attempt,
                        };
                        let report = exec.run(&job, &sink);
                        let done = WorkerMsg::Done {
                            idx: job.idx,
                            attempt: job.attempt,
                            report,
                        };
                        if msgs.send(done).is_err() {
                            break;
                        }
                    }
                })?;
            handles.push(handle);
        }
        Ok(Self {
            jobs: Some(job_tx),
            handles,
        })
    }

    pub(crate) fn send(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            // Workers only exit after `join` drops the sender, so this cannot fail before.
            let _ = tx.send(job);
        }
    }

    /// Ends the threads once their current job returns, and waits for them.
    pub(crate) fn join(&mut self) {
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for WorkerThreads {
    fn drop(&mut self) {
        self.join();
    }
}

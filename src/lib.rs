//! pexen: a dependency-aware parallel task scheduler.
//!
//! Tasks carry `requires` / `provides` tokens, `claims` / `uses` locks, counted `slots` and a
//! `priority`; a [`Scheduler`] runs them on worker threads (or worker processes) and streams
//! [`Event`]s as things happen. The CLI (`pexen run DIR`) builds tasks from a directory tree with
//! the [`factory`], and is one consumer of the same events among others (JSON, journal, JUnit).
//!
//! ```
//! use pexen::{Event, Outcome, Scheduler, Task};
//!
//! let tasks = vec![
//!     Task::closure("setup", |ctx| ctx.export("port", &8080)).provides(["db"]),
//!     Task::closure("test", |ctx| {
//!         let port: u16 = ctx.get("port")?.unwrap_or_default();
//!         assert_eq!(port, 8080);
//!         Ok(())
//!     })
//!     .requires(["db"]),
//! ];
//! let run = Scheduler::builder().jobs(2).build().run(tasks).unwrap();
//! let outcome = run
//!     .filter_map(|e| match e {
//!         Event::RunFinished { outcome, .. } => Some(outcome),
//!         _ => None,
//!     })
//!     .next();
//! assert_eq!(outcome, Some(Outcome::Pass));
//! ```

pub mod cli;
pub mod condition;
pub mod context;
pub mod engine;
pub mod error;
pub mod factory;
pub mod graph;
pub mod host;
pub mod pool;
pub mod protocol;
pub mod report;
pub mod sched;
#[cfg(feature = "serve")]
pub mod serve;
pub mod state;
pub mod task;
pub mod teleport;

pub use condition::Condition;
pub use context::{Context, Shared, TaskError};
pub use error::{GraphError, GraphErrors};
pub use factory::{FactoryError, FactoryErrors, TaskTree};
/// The worker side of the process pool: call [`worker::serve_if_worker`] first in `main`.
pub use pool::process::serve as worker;
pub use sched::events::{Counts, Event, Finished};
pub use sched::{Group, Observer, Resumed, Run, RunHandle, Scheduler, SchedulerBuilder};
pub use task::{
    CommandSpec, Meta, More, MoreMeta, OnFailure, Outcome, PoolKind, Run as RunSpec, Task,
    TaskName, Token, TokenList, Work,
};

//! Reporters: consumers of the event stream that describe a run to people and tools.
//!
//! [`record`] folds events into one [`TaskRecord`](record::TaskRecord) per task (the model that the
//! JUnit writer and the journal share), [`junit`] writes the JUnit XML file and [`json`] renders
//! the `--message-format json` lines.

pub mod json;
pub mod junit;
pub mod record;

pub use json::event_json;
pub use junit::write_junit;
pub use record::{AttemptRecord, Collector, RunSummary, TaskRecord};

//! Reporters: consumers of the event stream that describe a run to people and tools.
//!
//! [`record`] folds events into one [`TaskRecord`] per task (the model that the
//! JUnit writer and the journal share), [`junit`] writes the JUnit XML file, [`json`] renders
//! the `--message-format json` lines and [`human`] the display for people, through [`display`].

pub mod display;
pub mod human;
pub mod json;
pub mod junit;
pub(crate) mod progress;
pub mod record;
pub(crate) mod slow;

pub use json::event_json;
pub use junit::write_junit;
pub use record::{AttemptRecord, Collector, RunSummary, TaskRecord};

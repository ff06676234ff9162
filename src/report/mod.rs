//! Consumers of the event stream that write for people and machines.

pub mod human;
pub(crate) mod progress;

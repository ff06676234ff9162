//! The scheduler: one dispatcher that owns the run state, fed by worker messages.

pub mod events;

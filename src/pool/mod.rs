//! Pools that run task attempts: closures on threads, closures in worker processes, commands.

pub mod command;

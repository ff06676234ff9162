//! Problems of a tree, located: definition errors as the factory found them, and graph errors
//! prefixed with the `file:line:col` of the task at fault (every place, for a name defined
//! more than once), all reported at once.

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

use crate::error::{GraphError, GraphErrors};
use crate::factory::{FactoryError, Location};
use crate::task::TaskName;

/// A graph problem and where the task it is about is defined.
#[derive(Debug)]
pub struct Located {
    pub error: GraphError,
    pub at: Vec<Location>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((first, others)) = self.at.split_first() else {
            return write!(f, "{}", self.error);
        };
        write!(f, "{first}: {}", self.error)?;
        if !others.is_empty() {
            let others: Vec<String> = others.iter().map(ToString::to_string).collect();
            write!(f, " (also at {})", others.join(", "))?;
        }
        Ok(())
    }
}

/// Every problem of a tree: its definitions, then its graph (of the tasks that loaded).
#[derive(Debug, Error)]
pub struct TreeProblems {
    pub definitions: Vec<FactoryError>,
    pub graph: Vec<Located>,
}

impl fmt::Display for TreeProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d, g) = (self.definitions.len(), self.graph.len());
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        match (d, g) {
            (0, _) => write!(f, "{g} problem{} in the task graph", plural(g))?,
            (_, 0) => write!(f, "{d} problem{} in the task definitions", plural(d))?,
            _ => write!(
                f,
                "{} problems: {d} in the task definitions, {g} in the graph of the tasks that loaded",
                d + g
            )?,
        }
        for e in &self.definitions {
            write!(f, "\n  - {e}")?;
        }
        for e in &self.graph {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// The task a graph problem is about, to find where it is defined.
fn task_of(e: &GraphError) -> Option<&TaskName> {
    match e {
        GraphError::MissingProvider { task, .. }
        | GraphError::ClaimsAndUses { task, .. }
        | GraphError::SlotsOverCapacity { task, .. }
        | GraphError::LateProvider { task, .. }
        | GraphError::DuplicateName { task }
        | GraphError::UnknownGroup { task, .. }
        | GraphError::NoHost { task, .. }
        | GraphError::NoHostSlots { task, .. } => Some(task),
        GraphError::Cycle { path } => path.first(),
        GraphError::RunFinished | GraphError::VirtualWithoutProvider { .. } => None,
    }
}

/// Graph problems with the locations of their tasks.
pub(crate) fn locate(
    errors: GraphErrors,
    sources: &HashMap<TaskName, Vec<Location>>,
) -> Vec<Located> {
    errors
        .0
        .into_iter()
        .map(|error| {
            let at = task_of(&error)
                .and_then(|t| sources.get(t))
                .cloned()
                .unwrap_or_default();
            Located { error, at }
        })
        .collect()
}

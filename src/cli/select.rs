//! Task selection (`--filter`, `--tag`): the selected tasks plus, transitively, the providers
//! of what they require.

use std::collections::{HashMap, HashSet};

use glob::{MatchOptions, Pattern};

use super::CliError;
use crate::task::Task;

/// Keeps the tasks that match (any filter, when there are filters; any tag, when there are
/// tags) and every task that provides a token they need, in definition order.
pub(super) fn select(
    tasks: Vec<Task>,
    filters: &[String],
    tags: &[String],
) -> Result<Vec<Task>, CliError> {
    if filters.is_empty() && tags.is_empty() {
        return Ok(tasks);
    }
    let patterns = filters
        .iter()
        .map(|f| Pattern::new(f).map_err(|e| CliError::Usage(format!("bad --filter `{f}`: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // `*` stays within one path component, as in a shell; `**` crosses them.
    let opts = MatchOptions {
        require_literal_separator: true,
        ..MatchOptions::default()
    };
    let matches = |t: &Task| {
        (patterns.is_empty()
            || patterns
                .iter()
                .any(|p| p.matches_with(t.name.as_str(), opts)))
            && (tags.is_empty() || t.meta.tags.iter().any(|tag| tags.contains(tag)))
    };
    let mut providers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        for p in &t.meta.provides {
            providers.entry(p.as_str()).or_default().push(i);
        }
    }
    let mut keep: HashSet<usize> = HashSet::new();
    let mut stack: Vec<usize> = (0..tasks.len()).filter(|&i| matches(&tasks[i])).collect();
    while let Some(i) = stack.pop() {
        if !keep.insert(i) {
            continue;
        }
        for r in &tasks[i].meta.requires {
            stack.extend(providers.get(r.as_str()).into_iter().flatten().copied());
        }
    }
    if keep.is_empty() {
        return Err(CliError::Usage(
            "the selection (--filter/--tag) matches no task".to_string(),
        ));
    }
    Ok(tasks
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, t)| t)
        .collect())
}

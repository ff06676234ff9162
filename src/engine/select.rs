//! Task selection (`--filter`, `--tag`): the selected tasks plus, transitively, the providers
//! of what they require. For a virtual token (SPEC 13) only one provider is pulled in: one
//! already selected, else the one named by `--prefer`, else the best by priority then
//! definition order.

use std::collections::{HashMap, HashSet};

use glob::{MatchOptions, Pattern};

use super::EngineError;
use crate::task::Task;

/// Keeps the tasks that match (any filter, when there are filters; any tag, when there are
/// tags) and every task that provides a token they need, in definition order.
pub fn select(
    tasks: Vec<Task>,
    filters: &[String],
    tags: &[String],
    virtuals: &[String],
    prefer: &[String],
) -> Result<Vec<Task>, EngineError> {
    check_prefer(&tasks, virtuals, prefer)?;
    if filters.is_empty() && tags.is_empty() {
        return Ok(tasks);
    }
    let patterns = filters
        .iter()
        .map(|f| {
            Pattern::new(f).map_err(|e| EngineError::Usage(format!("bad --filter `{f}`: {e}")))
        })
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
    let matched: Vec<usize> = (0..tasks.len()).filter(|&i| matches(&tasks[i])).collect();
    let selected: HashSet<usize> = matched.iter().copied().collect();
    let mut stack = matched;
    let mut chosen: HashMap<&str, usize> = HashMap::new();
    while let Some(i) = stack.pop() {
        if !keep.insert(i) {
            continue;
        }
        for r in &tasks[i].meta.requires {
            let all = providers.get(r.as_str()).map_or(&[][..], Vec::as_slice);
            if virtuals.contains(r) {
                let pick = *chosen.entry(r.as_str()).or_insert_with(|| {
                    choose(&tasks, all, prefer, |p| {
                        selected.contains(&p) || keep.contains(&p)
                    })
                });
                stack.push(pick);
            } else {
                stack.extend(all.iter().copied());
            }
        }
    }
    if keep.is_empty() {
        return Err(EngineError::Usage(
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

/// The provider of a virtual token that a selection pulls in, among `providers` (not empty, in
/// definition order): one already selected, else one named by `--prefer`, else the best by
/// priority then definition order.
pub fn choose(
    tasks: &[Task],
    providers: &[usize],
    prefer: &[String],
    selected: impl Fn(usize) -> bool,
) -> usize {
    providers
        .iter()
        .copied()
        .find(|&p| selected(p))
        .or_else(|| {
            providers
                .iter()
                .copied()
                .find(|&p| prefer.iter().any(|n| n == tasks[p].name.as_str()))
        })
        .or_else(|| {
            providers
                .iter()
                .copied()
                .min_by_key(|&p| (tasks[p].meta.priority, p))
        })
        .expect("a virtual token has a provider")
}

/// For `pexen list` and `pexen graph`: per virtual token, the provider a selection would pull
/// in when none is selected.
pub fn default_choices(
    tasks: &[Task],
    virtuals: &[String],
    prefer: &[String],
) -> HashMap<String, usize> {
    virtuals
        .iter()
        .filter_map(|v| {
            let providers: Vec<usize> = (0..tasks.len())
                .filter(|&i| tasks[i].meta.provides.contains(v))
                .collect();
            (!providers.is_empty())
                .then(|| (v.clone(), choose(tasks, &providers, prefer, |_| false)))
        })
        .collect()
}

/// Each `--prefer` names a task that provides a virtual token.
pub fn check_prefer(
    tasks: &[Task],
    virtuals: &[String],
    prefer: &[String],
) -> Result<(), EngineError> {
    for name in prefer {
        let Some(t) = tasks.iter().find(|t| t.name.as_str() == name) else {
            return Err(EngineError::Usage(format!("--prefer {name}: no such task")));
        };
        if !t.meta.provides.iter().any(|p| virtuals.contains(p)) {
            return Err(EngineError::Usage(format!(
                "--prefer {name}: the task provides no virtual token (the root `_dir.ron` declares {})",
                if virtuals.is_empty() {
                    "none".to_string()
                } else {
                    virtuals.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
                }
            )));
        }
    }
    Ok(())
}

//! Task selection (`--filter`, `--tag`): the selected tasks plus, transitively, the providers
//! of what they require. For a virtual token (SPEC 13) only one provider is pulled in: one
//! already selected, else the one named by `--prefer`, else the best by priority then
//! definition order.

use std::collections::{HashMap, HashSet};

use glob::{MatchOptions, Pattern};

use super::EngineError;
use crate::task::Task;

/// The tasks to run, and for a selection how many matched it and how many were pulled in as
/// providers of what they require.
pub struct Selection {
    pub tasks: Vec<Task>,
    pub counts: Option<(usize, usize)>,
}

/// Keeps the tasks that match (any filter, when there are filters; any tag, when there are
/// tags) and every task that provides a token they need, in definition order.
pub fn select(
    tasks: Vec<Task>,
    filters: &[String],
    tags: &[String],
    virtuals: &[String],
    prefer: &[String],
) -> Result<Selection, EngineError> {
    check_prefer(&tasks, virtuals, prefer)?;
    if filters.is_empty() && tags.is_empty() {
        return Ok(Selection {
            tasks,
            counts: None,
        });
    }
    let filter = Filter::new(filters)?;
    let matches = |t: &Task| {
        filter.matches(t.name.as_str())
            && (tags.is_empty() || t.meta.more.tags.iter().any(|tag| tags.contains(tag)))
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
            if virtuals.iter().any(|v| v == r) {
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
        let mut what: Vec<String> = filters.iter().map(|f| format!("--filter {f}")).collect();
        what.extend(tags.iter().map(|t| format!("--tag {t}")));
        return Err(EngineError::NothingToRun(format!(
            "the selection ({}) matches none of the {} tasks; `pexen list` shows their names",
            what.join(" "),
            tasks.len()
        )));
    }
    let providers = keep.len() - selected.len();
    Ok(Selection {
        tasks: tasks
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, t)| t)
            .collect(),
        counts: Some((selected.len(), providers)),
    })
}

/// `--filter` values: any of them may match (none given: everything matches).
///
/// A value without glob characters (`*`, `?`, `[`) matches when it occurs anywhere in the name
/// (pytest's `-k`, nextest's default filter). A glob matches when it matches the whole name or
/// any run of whole `/`-separated components in it: `port-*` selects `net/port-a`, `tcp/c*`
/// selects `net/tcp/connect`. `*` stays within one component, `**` crosses them.
pub struct Filter {
    substrings: Vec<String>,
    globs: Vec<Pattern>,
}

impl Filter {
    pub fn new(filters: &[String]) -> Result<Self, EngineError> {
        let mut substrings = Vec::new();
        let mut globs = Vec::new();
        for f in filters {
            if f.contains(['*', '?', '[']) {
                globs.push(
                    Pattern::new(f)
                        .map_err(|e| EngineError::Usage(format!("bad --filter `{f}`: {e}")))?,
                );
            } else {
                substrings.push(f.clone());
            }
        }
        Ok(Self { substrings, globs })
    }

    pub fn matches(&self, name: &str) -> bool {
        if self.substrings.is_empty() && self.globs.is_empty() {
            return true;
        }
        if self.substrings.iter().any(|s| name.contains(s.as_str())) {
            return true;
        }
        if self.globs.is_empty() {
            return false;
        }
        let opts = MatchOptions {
            require_literal_separator: true,
            ..MatchOptions::default()
        };
        // Component boundaries: the start, after each `/`, and the end.
        let starts: Vec<usize> = std::iter::once(0)
            .chain(name.match_indices('/').map(|(i, _)| i + 1))
            .collect();
        let ends: Vec<usize> = name
            .match_indices('/')
            .map(|(i, _)| i)
            .chain(std::iter::once(name.len()))
            .collect();
        self.globs.iter().any(|g| {
            starts.iter().any(|&a| {
                ends.iter()
                    .filter(|&&b| b > a)
                    .any(|&b| g.matches_with(&name[a..b], opts))
            })
        })
    }
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
                .filter(|&i| tasks[i].meta.provides.iter().any(|p| p == v))
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
        if !t
            .meta
            .provides
            .iter()
            .any(|p| virtuals.iter().any(|v| v == p))
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f(filters: &[&str]) -> Filter {
        Filter::new(&filters.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn substrings_match_anywhere_and_globs_match_whole_components() {
        assert!(f(&[]).matches("anything"));
        assert!(f(&["port"]).matches("net/port-a"));
        assert!(f(&["t/po"]).matches("net/port-a"));
        assert!(!f(&["udp"]).matches("net/port-a"));
        assert!(f(&["port-*"]).matches("net/port-a"));
        assert!(f(&["port-*"]).matches("net/port-a/x"));
        assert!(f(&["tcp/c*"]).matches("net/tcp/connect"));
        assert!(f(&["net/*"]).matches("net/tcp"));
        assert!(f(&["net/*"]).matches("x/net/tcp/y"));
        assert!(!f(&["net/*"]).matches("network/tcp"));
        assert!(f(&["net/**"]).matches("net/tcp/connect"));
        assert!(
            !f(&["ort-*"]).matches("net/port-a"),
            "globs align on components"
        );
        assert!(!f(&["*.sh"]).matches("smoke/boot.py"));
        assert!(
            f(&["udp", "*.sh"]).matches("smoke/boot.sh"),
            "any filter may match"
        );
    }
}

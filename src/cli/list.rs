//! `pexen list`: the tasks of a tree with their metadata, for people or as JSON.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::args::{ListArgs, ListFormat};
use super::{load, CliError};
use crate::engine::{ignored_note, select};
use crate::error::exit_code;
use crate::task::Task;

pub(super) fn list(args: &ListArgs) -> Result<i32, CliError> {
    let tree = load(&args.dir)?;
    select::check_prefer(&tree.tasks, &tree.virtuals, &args.prefer)?;
    let mut chosen: HashMap<usize, Vec<String>> = HashMap::new();
    for (token, idx) in select::default_choices(&tree.tasks, &tree.virtuals, &args.prefer) {
        chosen.entry(idx).or_default().push(token);
    }
    for tokens in chosen.values_mut() {
        tokens.sort();
    }
    if tree.ignored > 0 {
        let note = ignored_note(tree.ignored);
        let note = note.trim_start_matches(" (").trim_end_matches(')');
        let _ = writeln!(std::io::stderr(), "note: {note}");
    }
    // A preview of what `run` with the same --filter/--tag would run.
    let (f, t) = (&args.select.filters, &args.select.tags);
    let kept: Option<HashSet<crate::task::TaskName>> = if f.is_empty() && t.is_empty() {
        None
    } else {
        let selected = select::select(tree.tasks.clone(), f, t, &tree.virtuals, &args.prefer)?;
        Some(selected.tasks.into_iter().map(|t| t.name).collect())
    };
    let shown = |t: &Task| kept.as_ref().is_none_or(|k| k.contains(&t.name));
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Json => {
            let mut all = crate::engine::describe(&tree, &args.prefer)?;
            if let serde_json::Value::Array(tasks) = &mut all {
                let mut shown_tasks = tree.tasks.iter().map(&shown);
                tasks.retain(|_| shown_tasks.next().unwrap_or(true));
            }
            let _ = writeln!(out, "{all}");
        }
        ListFormat::Human => {
            for (i, t) in tree.tasks.iter().enumerate().filter(|(_, t)| shown(t)) {
                let chosen = chosen.get(&i).map_or(&[][..], Vec::as_slice);
                let _ = writeln!(out, "{}", human_line(t, chosen));
            }
        }
    }
    Ok(exit_code::OK)
}

/// `label: a, b` for a non-empty list.
fn labelled<S: AsRef<str>>(label: &str, v: &[S]) -> Option<String> {
    (!v.is_empty()).then(|| {
        let v: Vec<&str> = v.iter().map(AsRef::as_ref).collect();
        format!("{label}: {}", v.join(", "))
    })
}

fn human_line(t: &Task, chosen: &[String]) -> String {
    let m = &t.meta;
    let mut parts = Vec::new();
    parts.extend(labelled("requires", &m.requires));
    parts.extend(labelled("provides", &m.provides));
    parts.extend(labelled("claims", &m.claims));
    parts.extend(labelled("uses", &m.uses));
    if !m.more.slots.is_empty() {
        let s: Vec<String> = m
            .more
            .slots
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.push(format!("slots: {}", s.join(", ")));
    }
    if m.priority != 0 {
        parts.push(format!("priority: {}", m.priority));
    }
    if let Some(t) = m.more.timeout {
        parts.push(format!("timeout: {}", humantime::format_duration(t)));
    }
    if m.more.retries > 0 {
        parts.push(format!("retries: {}", m.more.retries));
    }
    parts.extend(labelled("tags", &m.more.tags));
    if let Some(g) = m.more.group.as_ref().filter(|g| !g.is_empty()) {
        parts.push(format!("group: {g}"));
    }
    if !m.more.when.is_empty() {
        let all: Vec<String> = m.more.when.iter().map(crate::Condition::describe).collect();
        parts.push(format!("when: {}", all.join(" and ")));
    }
    parts.extend(labelled("chosen provider of", chosen));
    if parts.is_empty() {
        t.name.to_string()
    } else {
        format!("{}  [{}]", t.name, parts.join("; "))
    }
}

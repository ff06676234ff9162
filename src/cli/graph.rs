//! `pexen graph`: the DAG in Graphviz DOT, built with petgraph. An edge runs from a provider to
//! a task that requires its token, labelled with the token.

use std::io::Write;

use petgraph::dot::{Config, Dot};
use petgraph::graph::DiGraph;

use super::args::GraphArgs;
use super::{capacities, load, problems, CliError};
use crate::engine::select;
use crate::error::exit_code;
use crate::graph::Graph;

/// How an edge is drawn.
#[derive(Clone, Copy, Debug)]
enum Style {
    Plain,
    /// From the provider a selection pulls in for a virtual token.
    Chosen,
    /// From another provider of a virtual token.
    Alternative,
}

pub(super) fn graph(args: &GraphArgs) -> Result<i32, CliError> {
    let tree = load(&args.check.dir)?;
    let capacity = capacities(&tree.capacity, &args.check.capacity);
    let (f, t) = (&args.select.filters, &args.select.tags);
    let tasks = select::select(tree.tasks, f, t, &tree.virtuals, &args.prefer)?.tasks;
    let (g, _) = Graph::build(&tasks, &capacity).map_err(|e| problems::TreeProblems {
        definitions: Vec::new(),
        graph: problems::locate(e, &tree.sources),
    })?;
    let mut dag: DiGraph<&str, (&str, Style)> = DiGraph::with_capacity(tasks.len(), tasks.len());
    let nodes: Vec<_> = tasks
        .iter()
        .map(|t| dag.add_node(t.name.as_str()))
        .collect();
    // A virtual token's chosen provider gets a solid edge; the alternatives a dashed one.
    let chosen = select::default_choices(&tasks, &tree.virtuals, &args.prefer);
    for (i, req) in g.requires.iter().enumerate() {
        for &tok in req {
            let name = g.token_name(tok);
            for &p in g.providers(tok) {
                let style = match chosen.get(name) {
                    Some(&c) if c == p as usize => Style::Chosen,
                    Some(_) => Style::Alternative,
                    None => Style::Plain,
                };
                dag.add_edge(nodes[p as usize], nodes[i], (name, style));
            }
        }
    }
    let dot = Dot::with_attr_getters(
        &dag,
        &[Config::EdgeNoLabel, Config::NodeNoLabel],
        &|_, e| {
            let (token, style) = e.weight();
            match style {
                Style::Plain => format!("label = {token:?}"),
                Style::Chosen => format!("label = {:?}", format!("{token} (chosen)")),
                Style::Alternative => {
                    format!(
                        "label = {:?}, style = dashed",
                        format!("{token} (alternative)")
                    )
                }
            }
        },
        &|_, (_, name)| format!("label = {name:?}"),
    );
    let _ = writeln!(std::io::stdout().lock(), "{dot:?}");
    Ok(exit_code::OK)
}

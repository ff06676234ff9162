//! `pexen graph`: the DAG in Graphviz DOT, built with petgraph. An edge runs from a provider to
//! a task that requires its token, labelled with the token.

use std::io::Write;
use std::path::Path;

use petgraph::dot::{Config, Dot};
use petgraph::graph::DiGraph;

use super::{load, CliError};
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

pub(super) fn graph(dir: &Path) -> Result<i32, CliError> {
    let tree = load(dir)?;
    let (g, _) = Graph::build(&tree.tasks, &tree.capacity)?;
    let mut dag: DiGraph<&str, (&str, Style)> =
        DiGraph::with_capacity(tree.tasks.len(), tree.tasks.len());
    let nodes: Vec<_> = tree
        .tasks
        .iter()
        .map(|t| dag.add_node(t.name.as_str()))
        .collect();
    // A virtual token's chosen provider gets a solid edge; the alternatives a dashed one.
    let chosen = crate::engine::select::default_choices(&tree.tasks, &tree.virtuals, &[]);
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

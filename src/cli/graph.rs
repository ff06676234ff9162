//! `pexen graph`: the DAG in Graphviz DOT, built with petgraph. An edge runs from a provider to
//! a task that requires its token, labelled with the token.

use std::io::Write;
use std::path::Path;

use petgraph::dot::{Config, Dot};
use petgraph::graph::DiGraph;

use super::{load, CliError};
use crate::error::exit_code;
use crate::graph::Graph;

pub(super) fn graph(dir: &Path) -> Result<i32, CliError> {
    let tree = load(dir)?;
    let (g, _) = Graph::build(&tree.tasks, &tree.capacity)?;
    let mut dag: DiGraph<&str, &str> = DiGraph::with_capacity(tree.tasks.len(), tree.tasks.len());
    let nodes: Vec<_> = tree
        .tasks
        .iter()
        .map(|t| dag.add_node(t.name.as_str()))
        .collect();
    for (i, req) in g.requires.iter().enumerate() {
        for &tok in req {
            for &p in g.providers(tok) {
                dag.add_edge(nodes[p as usize], nodes[i], g.token_name(tok));
            }
        }
    }
    let dot = Dot::with_attr_getters(
        &dag,
        &[Config::EdgeNoLabel, Config::NodeNoLabel],
        &|_, e| format!("label = {:?}", e.weight()),
        &|_, (_, name)| format!("label = {name:?}"),
    );
    let _ = writeln!(std::io::stdout().lock(), "{dot:?}");
    Ok(exit_code::OK)
}

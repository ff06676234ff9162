//! The DAG laid out in layers for the page (`GET /api/v1/graph`): a task's layer is the length of
//! the longest chain of providers above it, so every arrow points down; within a layer tasks are
//! ordered by the mean column of their providers (one barycentre sweep), which keeps most arrows
//! short and uncrossed. The page only draws what is computed here.

use serde::Serialize;

use crate::graph::Graph;
use crate::task::Task;

/// The fewest columns of the grid of tasks without arrows.
const GRID_MIN_WIDTH: u32 = 6;

/// One task's place: `layer` (the longest chain of providers above it), `row` its rank within
/// the layer, and where to draw it: `line` from the top and `col` from the left (under its
/// providers where there is room). Tasks without providers or dependents are drawn in a grid
/// below the others, with their own `row` numbering.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(super) struct Node<'a> {
    pub(super) name: &'a str,
    pub(super) layer: u32,
    pub(super) row: u32,
    pub(super) col: u32,
    pub(super) line: u32,
    pub(super) tags: &'a [String],
}

/// The layout: nodes in definition order, edges as `[provider, dependent]` indices into them.
#[derive(Debug, Serialize)]
pub(super) struct Layout<'a> {
    pub(super) layers: u32,
    pub(super) nodes: Vec<Node<'a>>,
    pub(super) edges: Vec<[u32; 2]>,
}

/// Lays out `tasks`, whose validated `graph` is given (so it has no cycle).
pub(super) fn layout<'a>(tasks: &'a [Task], graph: &Graph) -> Layout<'a> {
    let n = tasks.len();
    let providers: Vec<Vec<u32>> = (0..n as u32).map(|i| graph.providers_of(i)).collect();
    let mut edges = Vec::new();
    let mut dependents: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (i, ps) in providers.iter().enumerate() {
        waiting[i] = ps.len();
        for &p in ps {
            dependents[p as usize].push(i as u32);
            edges.push([p, i as u32]);
        }
    }
    // Longest path from a root, in topological order (Kahn).
    let mut layer = vec![0u32; n];
    let mut ready: Vec<u32> = (0..n as u32)
        .filter(|&i| waiting[i as usize] == 0)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in &dependents[i as usize] {
            let d = d as usize;
            layer[d] = layer[d].max(layer[i as usize] + 1);
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d as u32);
            }
        }
    }
    let layers = layer.iter().max().map_or(0, |m| m + 1);
    // Tasks with no arrow at all (most of a test suite) are drawn apart, in a grid below the
    // rest, rather than as one endless first layer.
    let isolated: Vec<bool> = (0..n)
        .map(|i| providers[i].is_empty() && dependents[i].is_empty())
        .collect();
    let mut by_layer: Vec<Vec<u32>> = vec![Vec::new(); layers as usize];
    for i in 0..n {
        if !isolated[i] {
            by_layer[layer[i] as usize].push(i as u32);
        }
    }
    let mut row = vec![0u32; n];
    let mut col = vec![0u32; n];
    for members in &mut by_layer {
        // Mean row of the providers (all in layers above, already placed); roots keep
        // definition order. The sort is stable, so ties keep definition order too.
        let key = |i: u32| -> f64 {
            let ps = &providers[i as usize];
            if ps.is_empty() {
                f64::from(i)
            } else {
                ps.iter().map(|&p| f64::from(col[p as usize])).sum::<f64>() / ps.len() as f64
            }
        };
        let mut keyed: Vec<(f64, u32)> = members.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Columns: left to right in row order, each as close to under its providers as the
        // boxes already placed on its left allow.
        let mut next_free = 0u32;
        for (r, (_, i)) in keyed.iter().enumerate() {
            let i = *i as usize;
            row[i] = r as u32;
            let ps = &providers[i];
            let wanted = if ps.is_empty() {
                0
            } else {
                let mean =
                    ps.iter().map(|&p| f64::from(col[p as usize])).sum::<f64>() / ps.len() as f64;
                mean.round() as u32
            };
            col[i] = wanted.max(next_free);
            next_free = col[i] + 1;
        }
        *members = keyed.into_iter().map(|(_, i)| i).collect();
    }
    let connected_lines = by_layer
        .iter()
        .rposition(|m| !m.is_empty())
        .map_or(0, |l| l + 2);
    let width = by_layer
        .iter()
        .filter_map(|m| m.last().map(|&i| col[i as usize] + 1))
        .max()
        .unwrap_or(0)
        .max(GRID_MIN_WIDTH);
    let mut line: Vec<u32> = layer.clone();
    for (k, i) in (0..n).filter(|&i| isolated[i]).enumerate() {
        let k = k as u32;
        row[i] = k;
        col[i] = k % width;
        line[i] = connected_lines as u32 + k / width;
    }
    let nodes = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| Node {
            name: t.name.as_str(),
            layer: layer[i],
            row: row[i],
            col: col[i],
            line: line[i],
            tags: &t.meta.more.tags,
        })
        .collect();
    Layout {
        layers,
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn tasks() -> Vec<Task> {
        vec![
            Task::closure("c", |_| Ok(())).requires(["a", "b"]),
            Task::closure("a", |_| Ok(())).provides(["a"]),
            Task::closure("b", |_| Ok(()))
                .provides(["b"])
                .requires(["a"]),
            Task::closure("lone", |_| Ok(())),
        ]
    }

    #[test]
    fn layers_are_longest_chains_and_arrows_point_down() {
        let tasks = tasks();
        let (graph, _) = Graph::build(&tasks, &BTreeMap::new()).unwrap();
        let l = layout(&tasks, &graph);
        let layer = |name: &str| l.nodes.iter().find(|n| n.name == name).unwrap().layer;
        assert_eq!(
            (layer("a"), layer("b"), layer("c"), layer("lone")),
            (0, 1, 2, 0)
        );
        assert_eq!(l.layers, 3);
        for [p, d] in &l.edges {
            assert!(l.nodes[*p as usize].layer < l.nodes[*d as usize].layer);
        }
        assert_eq!(l.edges.len(), 3);
        // `b` sits under `a`; `lone` (no arrow) is drawn below the rest.
        let node = |name: &str| l.nodes.iter().find(|n| n.name == name).unwrap();
        assert_eq!(node("b").col, node("a").col);
        assert_eq!((node("a").line, node("b").line, node("c").line), (0, 1, 2));
        assert!(node("lone").line > node("c").line);
    }
}

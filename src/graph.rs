//! The task graph: tokens with their providers and dependents, and validation.
//!
//! Validation runs before anything starts (in release builds too) and reports every problem at
//! once: missing providers, cycles with their full path, a resource both claimed and used,
//! slots over capacity, duplicate names. Cycles are found with Kahn's algorithm on the token tables and, when there are any,
//! named with petgraph (Kosaraju SCCs) over the
//! provider -> dependent edges.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{GraphError, GraphErrors};
use crate::task::{Task, TaskName};

/// A token: who provides it and who waits for it (task indices, in definition order).
#[derive(Debug, Default, Clone)]
pub struct Token {
    pub name: Arc<str>,
    pub providers: Vec<u32>,
    pub dependents: Vec<u32>,
}

/// The validated structure of a run: tokens and, per task, the tokens it requires and provides.
#[derive(Debug, Default)]
pub struct Graph {
    pub tokens: Vec<Token>,
    token_ids: FxHashMap<Arc<str>, u32>,
    names: FxHashMap<TaskName, u32>,
    /// Per task: ids of required tokens (deduplicated, in declaration order).
    pub requires: Csr,
    /// Per task: ids of provided tokens (deduplicated).
    pub provides: Csr,
}

/// A list of short `u32` lists in two flat vectors (compressed sparse rows): two allocations
/// for a whole run instead of one per task.
#[derive(Debug, Default, Clone)]
pub struct Csr {
    ends: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    fn with_capacity(rows: usize) -> Self {
        Self {
            ends: Vec::with_capacity(rows),
            items: Vec::with_capacity(rows),
        }
    }

    /// Appends a row.
    fn push_row(&mut self, row: &[u32]) {
        self.items.extend_from_slice(row);
        self.ends.push(self.items.len() as u32);
    }

    fn append(&mut self, other: &Csr) {
        for row in other.iter() {
            self.push_row(row);
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u32]> {
        (0..self.len()).map(|i| &self[i])
    }
}

impl std::ops::Index<usize> for Csr {
    type Output = [u32];

    fn index(&self, row: usize) -> &[u32] {
        let start = if row == 0 {
            0
        } else {
            self.ends[row - 1] as usize
        };
        &self.items[start..self.ends[row] as usize]
    }
}

impl Graph {
    /// Builds and validates the graph of `tasks`. On success also returns warnings (tokens
    /// provided but never required).
    pub fn build(
        tasks: &[Task],
        capacity: &BTreeMap<String, u32>,
    ) -> Result<(Graph, Vec<String>), GraphErrors> {
        let mut graph = Graph::default();
        let warnings = graph.extend(tasks, 0, capacity)?;
        Ok((graph, warnings))
    }

    /// Adds `all[start..]` (tasks added to a run) to a graph that already holds `all[..start]`.
    ///
    /// Added tasks may require any token; they may only provide tokens that the existing tasks
    /// neither provide nor require, so that nothing already decided changes meaning. On error the
    /// graph is left as it was.
    pub fn extend(
        &mut self,
        all: &[Task],
        start: usize,
        capacity: &BTreeMap<String, u32>,
    ) -> Result<Vec<String>, GraphErrors> {
        let new = &all[start..];
        let mut errors = Vec::new();
        check_tasks(new, capacity, &mut errors);

        let mut names = FxHashMap::with_capacity_and_hasher(new.len(), rustc_hash::FxBuildHasher);
        for (i, t) in new.iter().enumerate() {
            let idx = (start + i) as u32;
            if self.names.contains_key(&t.name) || names.insert(t.name.clone(), idx).is_some() {
                errors.push(GraphError::DuplicateName {
                    task: t.name.clone(),
                });
            }
        }

        // Token ids for the new tasks, on a scratch copy of the token table so that a rejected
        // batch leaves `self` untouched.
        let old_tokens = self.tokens.len();
        let mut tokens = std::mem::take(&mut self.tokens);
        let mut token_ids = std::mem::take(&mut self.token_ids);
        // Most tokens are named by their provider: reserve once instead of doubling (the slack
        // of a doubled table of 10^6 tokens is tens of megabytes).
        let provided: usize = new.iter().map(|t| t.meta.provides.len()).sum();
        tokens.reserve(provided);
        token_ids.reserve(provided);
        let mut intern = |name: &str, tokens: &mut Vec<Token>| -> u32 {
            if let Some(&id) = token_ids.get(name) {
                return id;
            }
            let id = tokens.len() as u32;
            let name: Arc<str> = Arc::from(name);
            tokens.push(Token {
                name: name.clone(),
                ..Token::default()
            });
            token_ids.insert(name, id);
            id
        };
        let mut requires = Csr::with_capacity(new.len());
        let mut provides = Csr::with_capacity(new.len());
        let mut req: Vec<u32> = Vec::new();
        let mut prov: Vec<u32> = Vec::new();
        // Per token: (last provider + 1, first dependent). When every provider comes before
        // every dependent, definition order is a topological order and there is no cycle: the
        // common case, checked without walking the graph.
        let mut order: Vec<(u32, u32)> = Vec::new();
        for (i, t) in new.iter().enumerate() {
            let idx = (start + i) as u32;
            req.clear();
            for tok in &t.meta.requires {
                let id = intern(tok, &mut tokens);
                if !req.contains(&id) {
                    req.push(id);
                    tokens[id as usize].dependents.push(idx);
                    order.resize(tokens.len(), (0, u32::MAX));
                    order[id as usize].1 = order[id as usize].1.min(idx);
                }
            }
            prov.clear();
            for tok in &t.meta.provides {
                let id = intern(tok, &mut tokens);
                if !prov.contains(&id) {
                    let existing = &tokens[id as usize];
                    let old_use = existing.providers.iter().any(|&p| (p as usize) < start)
                        || existing.dependents.iter().any(|&d| (d as usize) < start);
                    if old_use {
                        errors.push(GraphError::LateProvider {
                            task: t.name.clone(),
                            token: tok.clone(),
                        });
                    }
                    prov.push(id);
                    tokens[id as usize].providers.push(idx);
                    order.resize(tokens.len(), (0, u32::MAX));
                    order[id as usize].0 = order[id as usize].0.max(idx + 1);
                }
            }
            requires.push_row(&req);
            provides.push_row(&prov);
        }

        // Only new tokens can lack a provider; one pass over them, reported in task order.
        let mut missing: Vec<(u32, u32)> = tokens[old_tokens..]
            .iter()
            .enumerate()
            .filter(|(_, tok)| tok.providers.is_empty())
            .flat_map(|(i, tok)| {
                tok.dependents
                    .iter()
                    .map(move |&d| (d, (old_tokens + i) as u32))
            })
            .collect();
        missing.sort_unstable();
        errors.extend(
            missing
                .into_iter()
                .map(|(d, tok)| GraphError::MissingProvider {
                    task: all[d as usize].name.clone(),
                    token: tokens[tok as usize].name.to_string(),
                }),
        );

        // Only the new tasks can close a cycle: old tasks never depend on new ones.
        let ordered = order
            .iter()
            .all(|&(after_last_provider, first_dependent)| after_last_provider <= first_dependent);
        if !ordered {
            find_cycles(all, start, &requires, &provides, &tokens, &mut errors);
        }

        if !errors.is_empty() {
            // Roll back: drop new tokens and the new tasks' entries in old tokens.
            tokens.truncate(old_tokens);
            for tok in &mut tokens {
                tok.providers.retain(|&p| (p as usize) < start);
                tok.dependents.retain(|&d| (d as usize) < start);
            }
            token_ids.retain(|_, id| (*id as usize) < old_tokens);
            self.tokens = tokens;
            self.token_ids = token_ids;
            return Err(GraphErrors(errors));
        }

        let mut warnings = Vec::new();
        for tok in &tokens[old_tokens..] {
            if tok.dependents.is_empty() {
                warnings.push(format!(
                    "token `{}` is provided by `{}` but required by no task",
                    tok.name, all[tok.providers[0] as usize].name
                ));
            }
        }
        self.tokens = tokens;
        self.token_ids = token_ids;
        self.names.extend(names);
        self.requires.append(&requires);
        self.provides.append(&provides);
        Ok(warnings)
    }

    /// The index of a task by name.
    pub fn index_of(&self, name: &TaskName) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// The id of a token by name.
    pub fn token_id(&self, name: &str) -> Option<u32> {
        self.token_ids.get(name).copied()
    }

    /// The tasks providing the tokens that task `idx` requires, deduplicated, in definition order.
    pub fn providers_of(&self, idx: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self.requires[idx as usize]
            .iter()
            .flat_map(|&t| self.tokens[t as usize].providers.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn len(&self) -> usize {
        self.requires.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requires.is_empty()
    }
}

/// Problems visible in one task alone.
fn check_tasks(tasks: &[Task], capacity: &BTreeMap<String, u32>, errors: &mut Vec<GraphError>) {
    for t in tasks {
        for r in &t.meta.claims {
            if t.meta.uses.contains(r) {
                errors.push(GraphError::ClaimsAndUses {
                    task: t.name.clone(),
                    resource: r.clone(),
                });
            }
        }
        for (slot, &wanted) in &t.meta.slots {
            let cap = capacity.get(slot).copied().unwrap_or(0);
            if wanted > cap {
                errors.push(GraphError::SlotsOverCapacity {
                    task: t.name.clone(),
                    slot: slot.clone(),
                    wanted,
                    capacity: cap,
                });
            }
        }
    }
}

/// Kahn's algorithm over the token tables: true when `all[start..]` has no cycle. This is the
/// common case and costs a counter per task, where building a petgraph graph of every edge
/// costs far more; petgraph only comes in to name the cycles when there are some.
fn acyclic(start: usize, requires: &Csr, provides: &Csr, tokens: &[Token]) -> bool {
    let n = requires.len();
    let new = |i: u32| (i as usize).checked_sub(start);
    let mut indegree: Vec<u32> = requires
        .iter()
        .map(|req| {
            req.iter()
                .map(|&t| {
                    tokens[t as usize]
                        .providers
                        .iter()
                        .filter(|&&p| new(p).is_some())
                        .count() as u32
                })
                .sum()
        })
        .collect();
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = ready.pop() {
        seen += 1;
        for &t in &provides[i] {
            for &d in &tokens[t as usize].dependents {
                if let Some(d) = new(d) {
                    indegree[d] -= 1;
                    if indegree[d] == 0 {
                        ready.push(d);
                    }
                }
            }
        }
    }
    seen == n
}

/// Reports every cycle among `all[start..]`, each with its full path.
fn find_cycles(
    all: &[Task],
    start: usize,
    requires: &Csr,
    provides: &Csr,
    tokens: &[Token],
    errors: &mut Vec<GraphError>,
) {
    if acyclic(start, requires, provides, tokens) {
        return;
    }
    let n = requires.len();
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(n, n);
    for _ in 0..n {
        g.add_node(());
    }
    let mut has_edges = false;
    for (i, req) in requires.iter().enumerate() {
        for &tok in req {
            for &p in &tokens[tok as usize].providers {
                if let Some(p) = (p as usize).checked_sub(start) {
                    g.add_edge(NodeIndex::new(p), NodeIndex::new(i), ());
                    has_edges = true;
                }
            }
        }
    }
    if !has_edges {
        return;
    }
    // `kosaraju_scc` is iterative: a long chain must not overflow the stack (petgraph's Tarjan
    // recurses).
    let mut sccs = petgraph::algo::kosaraju_scc(&g);
    for scc in &mut sccs {
        scc.sort_unstable();
    }
    sccs.sort_unstable_by_key(|scc| scc[0]);
    for scc in sccs {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let path = cycle_path(&g, &scc);
        errors.push(GraphError::Cycle {
            path: path
                .into_iter()
                .map(|n| all[start + n.index()].name.clone())
                .collect(),
        });
    }
}

/// One cycle through the strongly connected component `scc`, as a path that starts and ends at
/// its lowest-indexed task, written in dependency order (`a -> b` means b requires a).
fn cycle_path(g: &DiGraph<(), ()>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let in_scc: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    let first = *scc.iter().min().expect("an SCC is never empty");
    // Breadth-first search from `first` back to `first`, staying in the component: the shortest
    // cycle through it, found deterministically.
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([first]);
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = g.neighbors(n).filter(|m| in_scc.contains(m)).collect();
        next.sort_unstable();
        for m in next {
            if m == first {
                let mut path = vec![n];
                let mut cur = n;
                while cur != first {
                    cur = parent[&cur];
                    path.push(cur);
                }
                path.reverse();
                path.push(first);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    vec![first, first]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Task {
        Task::closure(name, |_| Ok(()))
    }

    fn errors(tasks: &[Task]) -> Vec<GraphError> {
        Graph::build(tasks, &BTreeMap::new()).unwrap_err().0
    }

    #[test]
    fn missing_provider_names_task_and_token() {
        let e = errors(&[t("a").requires(["nope"])]);
        assert_eq!(
            e,
            [GraphError::MissingProvider {
                task: "a".into(),
                token: "nope".into()
            }]
        );
    }

    #[test]
    fn cycle_is_reported_with_its_path() {
        let e = errors(&[
            t("a").requires(["c"]).provides(["a"]),
            t("b").requires(["a"]).provides(["b"]),
            t("c").requires(["b"]).provides(["c"]),
        ]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let e = errors(&[t("a").requires(["x"]).provides(["x"])]);
        assert_eq!(e[0].to_string(), "dependency cycle: a -> a");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors(&[
            t("a").requires(["b"]).provides(["a"]),
            t("b").requires(["a"]).provides(["b"]),
            t("c").claims(["r"]).uses(["r"]),
            t("d").slot("gpu", 2),
            t("c"),
            t("e").requires(["missing"]),
            t("f").requires(["y"]).provides(["z"]),
            t("g").requires(["z"]).provides(["y"]),
        ]);
        let kinds: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            kinds,
            [
                "task `c` both claims and uses resource `r`",
                "task `d` wants 2 of slot `gpu`, but the run's capacity is 0",
                "task name `c` is defined more than once",
                "task `e` requires token `missing`, which no task provides",
                "dependency cycle: a -> b -> a",
                "dependency cycle: f -> g -> f",
            ]
        );
    }

    #[test]
    fn unrequired_token_is_a_warning() {
        let (_, w) = Graph::build(&[t("a").provides(["lonely"])], &BTreeMap::new()).unwrap();
        assert_eq!(
            w,
            ["token `lonely` is provided by `a` but required by no task"]
        );
    }

    #[test]
    fn slots_within_capacity_pass() {
        let cap = BTreeMap::from([("gpu".to_string(), 2)]);
        assert!(Graph::build(&[t("a").slot("gpu", 2)], &cap).is_ok());
    }

    #[test]
    fn extend_rejects_late_providers_and_rolls_back() {
        let mut all = vec![t("a").provides(["x"]), t("b").requires(["x"])];
        let (mut g, _) = Graph::build(&all, &BTreeMap::new()).unwrap();
        all.push(t("c").provides(["x"]));
        let e = g.extend(&all, 2, &BTreeMap::new()).unwrap_err();
        assert!(matches!(e.0[0], GraphError::LateProvider { .. }));
        assert_eq!(g.tokens[0].providers, [0]);
        all.pop();
        all.push(t("d").requires(["x"]).provides(["y"]));
        all.push(t("e").requires(["y"]));
        assert!(g.extend(&all, 2, &BTreeMap::new()).unwrap().is_empty());
        assert_eq!(g.providers_of(3), [2]);
    }
}

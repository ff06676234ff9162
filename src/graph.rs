//! The task graph: tokens with their providers and dependents, and validation.
//!
//! Validation runs before anything starts (in release builds too) and reports every problem at
//! once: missing providers, cycles with their full path, a resource both claimed and used, slots
//! over capacity, duplicate names. When definition order is already a topological order (every
//! provider of a token defined before its dependents, the common case) there is no cycle to look
//! for; otherwise Kahn's algorithm decides and petgraph (Kosaraju SCCs over the provider ->
//! dependent edges) names every cycle.
//!
//! Edges are kept in flat rows ([`Csr`]): a handful of allocations for a run of 10^6 tasks
//! instead of several per task, which is most of the cost of building and of dropping a graph.

use std::collections::{BTreeMap, HashMap};

use hashbrown::HashTable;
use petgraph::graph::{DiGraph, NodeIndex};
use rustc_hash::FxHashMap;

use crate::error::{GraphError, GraphErrors};
use crate::task::{Task, TaskName};

/// The validated structure of a run: tokens and, per task, the tokens it requires and provides;
/// per token, the tasks that provide it and the tasks that require it (in definition order).
#[derive(Debug, Default)]
pub struct Graph {
    /// Token names, end to end in one string (no allocation per token).
    token_text: String,
    /// Where each token's name ends in `token_text`.
    token_ends: Vec<u32>,
    /// Token ids, hashed by their name in `token_text`.
    token_ids: HashTable<u32>,
    /// Task indices by name. A table of indices, hashed by the name in the task itself: no
    /// second copy of every name, no reference count touched per task (at 10^6 tasks, a map
    /// of `TaskName`s cost more than everything else of validation together). A run drops it
    /// once validated (see [`Graph::forget_names`]).
    names: HashTable<u32>,
    /// Per task: ids of required tokens (deduplicated, in declaration order).
    pub requires: Csr,
    /// Per task: ids of provided tokens (deduplicated).
    pub provides: Csr,
    /// Per token: its providers. Tokens only get providers in the batch that creates them.
    providers: Csr,
    /// Per token: its dependents from the batch that created it...
    dependents: Csr,
    /// ...and from later batches (tasks added during a run that require an older token).
    late_dependents: FxHashMap<u32, Vec<u32>>,
}

/// What the first pass of [`Graph::extend_seeing`] noticed in the tasks it was given (in a
/// batch it refused too): a run without conditions or groups then makes no pass of its own to
/// find out (at 10^6 tasks, a cache miss per task). Not kept in the graph: a larger `Graph`
/// moved the run state's fields and slowed a chain's run phase.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Seen {
    /// Some task has a condition (`when`).
    pub any_when: bool,
    /// Some task names a group.
    pub any_group: bool,
}

/// Unrequired tokens warned about one by one; the rest are counted in one more warning.
pub const UNREQUIRED_LISTED: usize = 20;

/// A list of short `u32` lists in two flat vectors (compressed sparse rows).
#[derive(Debug, Default, Clone)]
pub struct Csr {
    ends: Vec<u32>,
    items: Vec<u32>,
}

impl Csr {
    fn with_capacity(rows: usize, items: usize) -> Self {
        Self {
            ends: Vec::with_capacity(rows),
            items: Vec::with_capacity(items),
        }
    }

    /// The transpose of these rows, for the items `first_item..first_item + items` alone: per
    /// such item (less `first_item`), the rows that hold it (plus `first_row`), in row order.
    /// Built from the rows themselves, without a list of `(item, row)` pairs (8 bytes per
    /// item, twice, at the peak of a chain's validation), into the buffers of `spare` (see
    /// [`Spare`]).
    fn transposed(&self, first_row: u32, first_item: usize, items: usize, spare: Spare) -> Self {
        // An item below `first_item` wraps around to a column past the last.
        let col = |item: u32| (item as usize).wrapping_sub(first_item);
        let Spare {
            mut ends,
            items: mut out,
        } = spare;
        // Zeros, as `spare`'s buffers hold.
        ends.truncate(items);
        ends.resize(items, 0);
        for &item in &self.items {
            if let Some(count) = ends.get_mut(col(item)) {
                *count += 1;
            }
        }
        // Each column's start, moved to its end as the column fills.
        let mut total = 0;
        for e in &mut ends {
            let count = *e;
            *e = total;
            total += count;
        }
        if total == 0 {
            // No walk over the rows (tasks that require or provide nothing: most of them).
            out.clear();
            return Self { ends, items: out };
        }
        out.truncate(total as usize);
        out.resize(total as usize, 0);
        let mut start = 0;
        for (&end, r) in self.ends.iter().zip(first_row..) {
            for &item in &self.items[start..end as usize] {
                if let Some(next) = ends.get_mut(col(item)) {
                    out[*next as usize] = r;
                    *next += 1;
                }
            }
            start = end as usize;
        }
        Self { ends, items: out }
    }

    /// `rows` empty rows.
    fn empty_rows(rows: usize) -> Self {
        Self {
            ends: vec![0; rows],
            items: Vec::new(),
        }
    }

    /// Appends a row.
    fn push_row(&mut self, row: &[u32]) {
        self.items.extend_from_slice(row);
        self.end_row();
    }

    /// Adds `item` to the row being built (the items past the last row's end), unless it
    /// holds it already.
    // Measured: `#[inline]` alone left it a call in `Occurrences::push`, 45 instructions each.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn add_once(&mut self, item: u32) -> bool {
        let start = self.ends.last().map_or(0, |&end| end as usize);
        let new = !self.items[start..].contains(&item);
        if new {
            self.items.push(item);
        }
        new
    }

    /// Row `row`, as far as it is built: the items past the last row's end for the row being
    /// built, none past it.
    fn row_so_far(&self, row: usize) -> &[u32] {
        let start = match row {
            0 => 0,
            _ => self
                .ends
                .get(row - 1)
                .map_or(self.items.len(), |&e| e as usize),
        };
        let end = self.ends.get(row).map_or(self.items.len(), |&e| e as usize);
        &self.items[start..end]
    }

    /// Ends the row being built.
    #[inline]
    fn end_row(&mut self) {
        self.ends.push(self.items.len() as u32);
    }

    /// Appends `other`'s rows. Into an empty `Csr` (a run's first batch), `other` is moved: a
    /// copy would hold both at once, the peak of a chain's validation at 10^6 tasks.
    fn append(&mut self, other: Csr) {
        if self.ends.is_empty() {
            *self = other;
            return;
        }
        let base = self.items.len() as u32;
        self.items.extend_from_slice(&other.items);
        self.ends.extend(other.ends.iter().map(|e| e + base));
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

    #[inline]
    fn index(&self, row: usize) -> &[u32] {
        let start = if row == 0 {
            0
        } else {
            self.ends[row - 1] as usize
        };
        &self.items[start..self.ends[row] as usize]
    }
}

/// Buffers for a transpose ([`Csr::transposed`]), holding zeros.
///
/// Memory fresh from the kernel costs a page fault on its first write, some 2.5 µs per 4 KiB
/// page on the virtual machines of `doc/benchmarks.md` (nearly half of a chain's validation at
/// 10^6 tasks). The transposes come after the token pass, with nothing beside them; their
/// buffers are made (and so faulted in) on the thread that waits for the token pass instead.
#[derive(Default)]
struct Spare {
    ends: Vec<u32>,
    items: Vec<u32>,
}

impl Spare {
    /// `ends` and `items` zeros, written (not merely allocated zeroed, which the kernel maps
    /// lazily).
    fn zeroed(ends: usize, items: usize) -> Self {
        Self {
            ends: written_zeros(ends),
            items: written_zeros(items),
        }
    }
}

/// `n` zeros, each page written (and so faulted in) now. Also used for the run state's table
/// of pending providers (see `RunState::admit`).
// Not `vec![0; n]`: that asks the allocator for zeroed memory, which fresh pages are, untouched.
#[allow(clippy::slow_vector_initialization)]
pub(crate) fn written_zeros(n: usize) -> Vec<u32> {
    let mut v = Vec::with_capacity(n);
    // Seen by the optimizer as written elsewhere: the allocation and the zeros below are not
    // turned into a zeroed allocation either.
    std::hint::black_box(v.as_mut_ptr());
    v.resize(n, 0);
    v
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
        self.extend_seeing(all, start, capacity, &mut Seen::default(), &mut || {})
    }

    /// [`Graph::extend`], noting in `seen` what the run needs to know of the tasks. `beside` is
    /// the caller's own pass over the tasks, called when this thread has done its share of the
    /// first pass of a large batch whose tokens are meanwhile hashed on another thread; not
    /// called otherwise (the caller's pass then comes after, once the validation's tables are
    /// freed: peak memory).
    pub(crate) fn extend_seeing(
        &mut self,
        all: &[Task],
        start: usize,
        capacity: &BTreeMap<String, u32>,
        seen: &mut Seen,
        beside: &mut dyn FnMut(),
    ) -> Result<Vec<String>, GraphErrors> {
        self.index_names(all, start);
        let new = &all[start..];
        let mut errors = Vec::new();
        // One pass over the definitions for what each shows alone, the name hashes and the
        // number of required and provided tokens (and, in a large first batch, the tokens'
        // hashes, and their ids and rows while it can: see `Occurrences`); one more for the
        // tokens' rows otherwise, if any task names one. At 10^6 tasks each pass over the
        // definitions is a cache miss per task, so they are few.
        // A large first batch: every token occurrence hashed in the same pass, for `BulkTokens`
        // (one pass over the definitions less); on a second core where there is one, beside
        // the rest of the pass and the search for duplicate names.
        let bulk_batch = self.token_count() == 0 && new.len() >= BULK_TASKS;
        let (first, sorted, duplicates, spare) = if bulk_batch && second_core() {
            let ((numbered, occurrences), (first, duplicates, spare)) = both(
                || {
                    let mut occurrences = Occurrences::of(new);
                    (occurrences.numbering(), occurrences)
                },
                || {
                    let mut first = FirstPass::of(new, capacity, &mut errors, None);
                    let duplicates = self.duplicates(all, start, &mut first.names);
                    // Here, not on the other thread: what the other thread allocates is in
                    // its own arena of the allocator, and freed from this one at the end of the
                    // run (10^6 tasks claiming one lock: a teardown 20-50 % longer).
                    beside();
                    // The transposes' buffers, while the other thread still hashes (see
                    // `Spare`): for valid tokens, each provided at least once.
                    let spare = (first.provided > 0).then(|| {
                        [
                            Spare::zeroed(first.provided, first.provided),
                            Spare::zeroed(first.provided, first.required),
                        ]
                    });
                    (first, duplicates, spare)
                },
            );
            let sorted = Sorted::of(numbered, occurrences, Threads::Two);
            (first, Some(sorted), duplicates, spare)
        } else {
            let mut occurrences = bulk_batch.then(|| Occurrences::new(true, new.len()));
            let mut first = FirstPass::of(new, capacity, &mut errors, occurrences.as_mut());
            let duplicates = self.duplicates(all, start, &mut first.names);
            let sorted = occurrences.map(|mut o| Sorted::of(o.numbering(), o, Threads::One));
            (first, sorted, duplicates, None)
        };
        let FirstPass {
            provided,
            required,
            any_when,
            any_group,
            ..
        } = first;
        seen.any_when |= any_when;
        seen.any_group |= any_group;
        errors.extend(duplicates.into_iter().map(|idx| GraphError::DuplicateName {
            task: all[idx as usize].name.clone(),
        }));

        // Tokens are interned into the graph's tables right away; a rejected batch removes the
        // ones it added.
        self.index_tokens();
        let old_tokens = self.token_count();
        let old_text = self.token_text.len();
        let old_errors = errors.len();
        // Most tokens are named by their provider: reserve once instead of doubling.
        self.token_ends.reserve(provided);
        // A large first batch: every token occurrence's id decided from its hash, without the
        // table of token ids (see `BulkTokens`).
        let no_tokens = provided == 0 && required == 0;
        let (mut bulk, mut numbered) = match sorted.filter(|_| !no_tokens) {
            None => (None, None),
            Some(Sorted::Numbered(n)) => (None, Some(n)),
            Some(Sorted::Ids(b)) => (Some(b), None),
        };
        if bulk.is_none() && numbered.is_none() {
            self.reserve_token_ids(provided);
        }
        let rows = loop {
            if no_tokens {
                // No task names a token (independent tasks): every row is empty, without two
                // more passes over the definitions.
                break TokenRows {
                    requires: Csr::empty_rows(new.len()),
                    provides: Csr::empty_rows(new.len()),
                };
            }
            if let Some(n) = numbered.take() {
                // Numbered in the first pass (a large first batch: no token before it).
                debug_assert_eq!(old_tokens, 0);
                self.token_text = n.text;
                self.token_ends = n.ends;
                break n.rows;
            }
            let tried = self.token_rows(new, old_tokens, provided, bulk.as_mut(), &mut errors);
            if let Ok(rows) = tried {
                break rows;
            }
            // Two different tokens with one 64-bit hash: start again, one by one.
            self.token_text.truncate(old_text);
            self.token_ends.truncate(old_tokens);
            errors.truncate(old_errors);
            bulk = None;
            self.reserve_token_ids(provided);
        };
        // Freed as soon as done with (peak memory at 10^6 tasks).
        drop(bulk);
        let TokenRows { requires, provides } = rows;

        // Rows of the new tokens (ids from `old_tokens`); dependents of older tokens apart.
        let fresh = self.token_count() - old_tokens;
        let [for_providers, for_dependents] = spare.unwrap_or_default();
        let new_providers = provides.transposed(start as u32, old_tokens, fresh, for_providers);
        let new_dependents = requires.transposed(start as u32, old_tokens, fresh, for_dependents);
        // Dependents of older tokens, recorded once the batch is accepted.
        let late: Vec<(u32, u32)> = if old_tokens == 0 {
            Vec::new()
        } else {
            requires
                .iter()
                .zip(start as u32..)
                .flat_map(|(row, idx)| {
                    row.iter()
                        .filter(|&&tok| (tok as usize) < old_tokens)
                        .map(move |&tok| (tok, idx))
                })
                .collect()
        };

        let TokenChecks {
            unprovided,
            unrequired,
            more_unrequired,
            ordered,
        } = TokenChecks::of(&new_providers, &new_dependents);
        // Only new tokens can lack a provider; reported in task order.
        let mut missing: Vec<(u32, u32)> = unprovided
            .into_iter()
            .flat_map(|r| {
                new_dependents[r as usize]
                    .iter()
                    .map(move |&d| (d, old_tokens as u32 + r))
            })
            .collect();
        missing.sort_unstable();
        errors.extend(
            missing
                .into_iter()
                .map(|(d, tok)| GraphError::MissingProvider {
                    task: all[d as usize].name.clone(),
                    token: self.token_name(tok).to_string(),
                }),
        );

        // Only the new tasks can close a cycle: old tasks never depend on new ones, nor provide
        // new tokens. Definition order is a topological order when each new token's last
        // provider comes before its first dependent (rows are in definition order).
        if !ordered {
            let edges = NewEdges {
                start,
                old_tokens,
                providers: &new_providers,
                dependents: &new_dependents,
            };
            find_cycles(all, &requires, &provides, &edges, &mut errors);
        }

        if !errors.is_empty() {
            self.token_ids.retain(|&mut id| (id as usize) < old_tokens);
            self.token_ends.truncate(old_tokens);
            self.token_text.truncate(old_text);
            self.names.retain(|&mut j| (j as usize) < start);
            return Err(GraphErrors(errors));
        }

        let mut warnings: Vec<String> = unrequired
            .into_iter()
            .map(|r| {
                format!(
                    "token `{}` is provided by `{}` but required by no task",
                    self.token_name(old_tokens as u32 + r),
                    all[new_providers[r as usize][0] as usize].name
                )
            })
            .collect();
        // Many of them (a generated graph's leaves): one line for the rest, not one each.
        if more_unrequired > 0 {
            warnings.push(format!(
                "{more_unrequired} more tokens are provided but required by no task"
            ));
        }
        for (tok, idx) in late {
            self.late_dependents.entry(tok).or_default().push(idx);
        }
        self.providers.append(new_providers);
        self.dependents.append(new_dependents);
        self.requires.append(requires);
        self.provides.append(provides);
        Ok(warnings)
    }

    /// Each task's rows of required and provided tokens, interning the tokens (from `bulk`'s ids
    /// when given). Fails only when `bulk` met two different tokens with one hash.
    fn token_rows(
        &mut self,
        new: &[Task],
        old_tokens: usize,
        provided: usize,
        mut bulk: Option<&mut BulkTokens>,
        errors: &mut Vec<GraphError>,
    ) -> Result<TokenRows, Collision> {
        let mut rows = TokenRows {
            requires: Csr::with_capacity(new.len(), new.len()),
            provides: Csr::with_capacity(new.len(), provided),
        };
        let mut row: Vec<u32> = Vec::new();
        let mut occurrence = 0;
        for t in new {
            row.clear();
            for tok in &t.meta.requires {
                let id = match bulk.as_deref_mut() {
                    Some(b) => self.bulk_id(b, &mut occurrence, tok)?,
                    None => self.intern(tok),
                };
                if !row.contains(&id) {
                    row.push(id);
                }
            }
            rows.requires.push_row(&row);
            row.clear();
            for tok in &t.meta.provides {
                let id = match bulk.as_deref_mut() {
                    Some(b) => self.bulk_id(b, &mut occurrence, tok)?,
                    None => self.intern(tok),
                };
                if !row.contains(&id) {
                    if (id as usize) < old_tokens {
                        errors.push(GraphError::LateProvider {
                            task: t.name.clone(),
                            token: tok.to_string(),
                        });
                    }
                    row.push(id);
                }
            }
            rows.provides.push_row(&row);
        }
        Ok(rows)
    }

    /// The id of occurrence `occurrence` (counted in definition order), `tok`: a new one if it
    /// is the first occurrence of its token, that of the earlier occurrence `bulk` gave it
    /// otherwise.
    fn bulk_id(
        &mut self,
        bulk: &mut BulkTokens,
        occurrence: &mut usize,
        tok: &str,
    ) -> Result<u32, Collision> {
        let o = *occurrence;
        *occurrence += 1;
        let first = bulk.ids[o] as usize;
        let id = if first == o {
            let id = self.token_ends.len() as u32;
            self.token_text.push_str(tok);
            self.token_ends.push(self.token_text.len() as u32);
            id
        } else {
            // Equal hashes: the same token, unless they collide (then the slow way).
            let id = bulk.ids[first];
            if self.token_name(id) != tok {
                return Err(Collision);
            }
            id
        };
        bulk.ids[o] = id;
        Ok(id)
    }

    /// Whether every token is in `token_ids` (a first batch interned in bulk leaves it empty
    /// until a lookup by name needs it).
    fn tokens_indexed(&self) -> bool {
        self.token_ids.len() == self.token_count()
    }

    /// Puts every token into `token_ids` if a bulk batch left them out, in bucket order.
    pub fn index_tokens(&mut self) {
        if self.tokens_indexed() {
            return;
        }
        let hashes: Vec<u64> = (0..self.token_count() as u32)
            .map(|id| str_hash(self.token_name(id)))
            .collect();
        self.token_ids.clear();
        self.reserve_token_ids(hashes.len());
        let (text, ends) = (&self.token_text, &self.token_ends);
        for (h, id) in bucket_order(&hashes, &self.token_ids) {
            self.token_ids
                .insert_unique(h, id, |&id| str_hash(token_str(text, ends, id)));
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        let h = str_hash(name);
        let (text, ends) = (&self.token_text, &self.token_ends);
        if let Some(&id) = self
            .token_ids
            .find(h, |&id| token_str(text, ends, id) == name)
        {
            return id;
        }
        let id = self.token_ends.len() as u32;
        self.token_text.push_str(name);
        self.token_ends.push(self.token_text.len() as u32);
        let (text, ends) = (&self.token_text, &self.token_ends);
        self.token_ids
            .insert_unique(h, id, |&id| str_hash(token_str(text, ends, id)));
        id
    }

    fn reserve_token_ids(&mut self, additional: usize) {
        let (text, ends) = (&self.token_text, &self.token_ends);
        self.token_ids
            .reserve(additional, |&id| str_hash(token_str(text, ends, id)));
    }

    /// The tasks of `all[start..]` whose name an earlier task has, in definition order, from
    /// their name hashes `names` (taken: freed as soon as done with).
    fn duplicates(&mut self, all: &[Task], start: usize, names: &mut Vec<Occurrence>) -> Vec<u32> {
        let names = std::mem::take(names);
        if start == 0 {
            duplicates_sorted(all, &names)
        } else {
            self.duplicates_indexed(all, start, names)
        }
    }

    /// The tasks of `all[start..]` whose name an earlier task has (added tasks), in definition
    /// order, through the table of names, which takes theirs.
    fn duplicates_indexed(
        &mut self,
        all: &[Task],
        start: usize,
        names: Vec<Occurrence>,
    ) -> Vec<u32> {
        let name_hashes: Vec<u64> = names.iter().map(occurrence_hash).collect();
        drop(names);
        let hash_of = |j: &u32| name_hash(&all[*j as usize].name);
        self.names.reserve(name_hashes.len(), hash_of);
        // Names go into the table in the order of their buckets, not of their tasks: the table
        // is then visited front to back (at 10^6 tasks, a cache miss per task otherwise). Equal
        // names keep definition order, so the first one wins and the others are the duplicates.
        let mut duplicates = Vec::new();
        // Each position with its hash: read in bucket order, `name_hashes` would be a cache miss
        // per task at 10^6 tasks.
        let by_bucket = bucket_order(&name_hashes, &self.names);
        drop(name_hashes);
        for (h, i) in by_bucket {
            let idx = start as u32 + i;
            let name = &all[idx as usize].name;
            if self
                .names
                .find(h, |&j| all[j as usize].name == *name)
                .is_some()
            {
                duplicates.push(idx);
            } else {
                self.names.insert_unique(h, idx, hash_of);
            }
        }
        duplicates.sort_unstable();
        duplicates
    }

    /// Puts every task's name into the table of names if it is not there (a run's first batch
    /// is checked without it), for lookups by name.
    pub(crate) fn index_all_names(&mut self, all: &[Task]) {
        self.index_names(all, self.len());
    }

    /// Drops the table of task names: a run needs it only to validate tasks and to find a
    /// few by name before it starts (at 10^6 tasks, 10 MiB for the whole run otherwise). The
    /// next [`Graph::extend`] builds it again; [`Graph::index_of`] looks through the tasks
    /// meanwhile.
    pub(crate) fn forget_names(&mut self) {
        self.names = HashTable::new();
    }

    /// Puts the names of `all[..end]`, the tasks of the graph, back into the table after
    /// [`Graph::forget_names`], in bucket order.
    fn index_names(&mut self, all: &[Task], end: usize) {
        if self.names.len() == end {
            return;
        }
        let hashes: Vec<u64> = all[..end].iter().map(|t| name_hash(&t.name)).collect();
        let hash_of = |j: &u32| name_hash(&all[*j as usize].name);
        self.names.clear();
        self.names.reserve(end, hash_of);
        for (h, j) in bucket_order(&hashes, &self.names) {
            self.names.insert_unique(h, j, hash_of);
        }
    }

    /// The index of a task by name; `tasks` are the tasks the graph was built from.
    pub fn index_of(&self, tasks: &[Task], name: &TaskName) -> Option<u32> {
        if self.names.len() < self.len() {
            // The table was dropped (see `forget_names`).
            return (0..self.len() as u32).find(|&j| tasks[j as usize].name == *name);
        }
        self.names
            .find(name_hash(name), |&j| tasks[j as usize].name == *name)
            .copied()
    }

    /// The id of a token by name.
    /// Looks through every token when a large first batch left the table of ids unbuilt
    /// (see [`Graph::index_tokens`]).
    pub fn token_id(&self, name: &str) -> Option<u32> {
        if !self.tokens_indexed() {
            return (0..self.token_count() as u32).find(|&id| self.token_name(id) == name);
        }
        self.token_ids
            .find(str_hash(name), |&id| self.token_name(id) == name)
            .copied()
    }

    /// How many tokens the graph knows.
    pub fn token_count(&self) -> usize {
        self.token_ends.len()
    }

    pub fn token_name(&self, token: u32) -> &str {
        token_str(&self.token_text, &self.token_ends, token)
    }

    /// The tasks that provide `token`, in definition order.
    #[inline]
    pub fn providers(&self, token: u32) -> &[u32] {
        &self.providers[token as usize]
    }

    /// The tasks that require `token`, in definition order.
    // Inlined: called twice per task of a chain by the run state (in another unit of code
    // generation), a call returned the iterator through memory.
    #[inline]
    pub fn dependents(&self, token: u32) -> impl Iterator<Item = u32> + '_ {
        // Most runs add no tasks: no hash lookup per token then.
        let late = if self.late_dependents.is_empty() {
            &[][..]
        } else {
            self.late_dependents_of(token)
        };
        self.dependents[token as usize].iter().chain(late).copied()
    }

    /// The tasks added to the run that require `token`, an older one.
    #[inline(never)]
    fn late_dependents_of(&self, token: u32) -> &[u32] {
        self.late_dependents
            .get(&token)
            .map_or(&[][..], Vec::as_slice)
    }

    /// The tasks providing the tokens that task `idx` requires, deduplicated, in definition order.
    pub fn providers_of(&self, idx: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self.requires[idx as usize]
            .iter()
            .flat_map(|&t| self.providers(t).iter().copied())
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

/// Tasks in a first batch from which its tokens are interned in bulk ([`BulkTokens`]): below,
/// the table of token ids stays in the caches and interning one by one is cheaper (at 10^5
/// tasks, validating a chain took a third longer in bulk). Tests use the bulk path at a size
/// they can afford.
const BULK_TASKS: usize = if cfg!(test) { 1 << 14 } else { 1 << 19 };

/// Two different tokens with the same 64-bit hash, met by [`BulkTokens`].
struct Collision;

/// What [`Graph::token_rows`] builds.
struct TokenRows {
    requires: Csr,
    provides: Csr,
}

/// Token ids for a large first batch, decided without a hash table (at 10^6 tasks, a probe
/// of the table of token ids is a cache miss or two per occurrence, most of a chain's
/// validation).
///
/// Every occurrence of a token (each task's requires, then its provides, in definition order)
/// is hashed in one pass ([`Occurrences`]), and gets an earlier occurrence of the same hash
/// when one is among the recent ones, or is sorted otherwise: sorting these puts equal hashes
/// side by side, the first occurrence first. Then, in definition order, a first occurrence
/// gets the next id, and any other the id of the one it was given (its text compared, so that
/// a hash collision is never taken for the same token). The table of ids is built only when a
/// lookup by name needs it ([`Graph::index_tokens`]): tasks added to the run, virtual tokens.
///
/// At most 16 bytes per occurrence at once (the occurrences to sort, sorted in place, and the
/// ids): at 10^6 tasks, the hashes alongside a sorted copy of them (24 bytes per occurrence)
/// were the peak of a chain's validation.
struct BulkTokens {
    /// Per occurrence: an earlier occurrence of its token, or itself if it is the first,
    /// replaced by its token id once decided.
    ids: Vec<u32>,
}

/// An occurrence being sorted: its hash (high half, low half), then its position. Three `u32`s
/// sort like `(hash, position)`, which as a tuple takes 16 bytes with its padding.
type Occurrence = [u32; 3];

fn occurrence_hash(o: &Occurrence) -> u64 {
    u64::from(o[0]) << 32 | u64::from(o[1])
}

/// An occurrence of hash `h` at `position`.
fn occurrence(h: u64, position: u32) -> Occurrence {
    [(h >> 32) as u32, h as u32, position]
}

/// The token occurrences of a large first batch, hashed in definition order, for
/// [`BulkTokens`].
///
/// Most tokens are required soon after they are provided (a chain: each by the next task) or
/// again and again (a fan-out's root). An occurrence whose hash is in a small table of recent
/// ones takes the occurrence found there as its own first, and is not sorted: a chain sorts
/// half of its occurrences, a fan-out one. The table is direct-mapped by hash; an occurrence
/// it missed goes to the sort (the one found earlier, if it was evicted, too), which gives it
/// the first occurrence of its hash.
///
/// While it can, the same pass also numbers the tokens and builds the rows ([`Numbered`]),
/// so that no second pass over the definitions is needed: each occurrence the table missed
/// is taken for its token's first and gets the next id, each one found there gets the id
/// of the one found, once its text is compared with that one's. The numbering holds if no two
/// occurrences the table missed have one hash, which the sort tells.
struct Occurrences {
    /// Per occurrence so far: an earlier one of the same hash, or itself. Left empty while
    /// the tokens are numbered (they then need no sort), and filled from the numbering if it
    /// is given up ([`Occurrences::give_up_numbering`]): at 10^6 tasks, 8 MB that a chain
    /// never reads.
    ids: Vec<u32>,
    /// Occurrences so far.
    count: u32,
    /// The occurrences the recent table missed.
    sorted: Vec<Occurrence>,
    /// Per slot (the hash's low bits): the hash, position and id in `numbered` of the last
    /// occurrence that missed it; `u32::MAX` as position when empty.
    recent: Vec<(u64, u32, u32)>,
    /// The tokens numbered as they come, until a sign that the sort will find the numbering
    /// wrong.
    numbered: Option<Numbered>,
}

/// Token ids and rows decided in the first pass ([`Occurrences`]).
struct Numbered {
    /// The tokens' text, end to end, in id order, as in [`Graph`].
    text: String,
    ends: Vec<u32>,
    rows: TokenRows,
    /// Provided occurrences so far.
    provided: usize,
    /// The occurrences left out of their row, which already held their token (a task that
    /// names a token twice): position and id, in position order.
    repeated: Vec<(u32, u32)>,
}

/// Slots of [`Occurrences::recent`]: 16 KiB, in the first-level cache beside the pass (at 4096
/// slots, 64 KiB, a third of the samples of `Occurrences::occur` at 10^6 tasks sat on the
/// probe, and a random DAG's validation took a sixth longer; 256 slots did no better than 1024).
const RECENT_SLOTS: usize = 1024;

/// Occurrences the recent table missed beyond those provided, past which [`Numbered`] is
/// given up: every token is provided at least once, so many more of them than provided
/// occurrences are tokens met again after the table lost them (a random DAG's, from its
/// first few hundred tasks), for which the sort will find the numbering wrong.
const NUMBERED_SLACK: usize = 1024;

impl Occurrences {
    /// For a batch of `tasks`; with `numbering`, [`Numbered`] is tried.
    fn new(numbering: bool, tasks: usize) -> Self {
        Self {
            ids: Vec::new(),
            count: 0,
            sorted: Vec::new(),
            recent: vec![(0, u32::MAX, 0); RECENT_SLOTS],
            numbered: numbering.then(|| Numbered {
                text: String::new(),
                ends: Vec::new(),
                rows: TokenRows {
                    requires: Csr::with_capacity(tasks, tasks),
                    provides: Csr::with_capacity(tasks, tasks),
                },
                provided: 0,
                repeated: Vec::new(),
            }),
        }
    }

    /// Every token occurrence of a large first batch `new`, numbered while it can.
    fn of(new: &[Task]) -> Self {
        let mut occurrences = Self::new(true, new.len());
        for t in new {
            occurrences.push(t);
        }
        occurrences
    }

    /// Adds the token occurrences of `t`: its requires, then its provides.
    fn push(&mut self, t: &Task) {
        // Each id straight into its row, not into a row of its own copied in afterwards.
        for tok in &t.meta.requires {
            let id = self.occur(tok);
            if let Some(n) = &mut self.numbered {
                if !n.rows.requires.add_once(id) {
                    n.repeated.push((self.count - 1, id));
                }
            }
        }
        if let Some(n) = &mut self.numbered {
            n.rows.requires.end_row();
        }
        for tok in &t.meta.provides {
            let id = self.occur(tok);
            if let Some(n) = &mut self.numbered {
                if !n.rows.provides.add_once(id) {
                    n.repeated.push((self.count - 1, id));
                }
            }
        }
        if let Some(n) = &mut self.numbered {
            n.rows.provides.end_row();
            n.provided += t.meta.provides.len();
            if n.ends.len() > n.provided + NUMBERED_SLACK {
                self.give_up_numbering();
            }
        }
    }

    /// The numbering will not hold: each occurrence so far gets its earlier one (`ids`) from
    /// it, as if `ids` had been kept all along. The numbering's rows (with the occurrences
    /// left out of them) hold every occurrence in order, and the first occurrence of each id
    /// is the one the recent table missed, which gave it that id: the one that occurrences of
    /// the same hash found in the table since.
    #[cold]
    fn give_up_numbering(&mut self) {
        let Some(n) = self.numbered.take() else {
            return;
        };
        let mut ids = Vec::with_capacity(self.count as usize);
        let mut first: Vec<u32> = Vec::with_capacity(n.ends.len());
        let mut repeated = n.repeated.iter().peekable();
        let mut see = |id: u32, ids: &mut Vec<u32>| {
            while let Some(&(_, r)) = repeated.next_if(|&&(at, _)| at as usize == ids.len()) {
                ids.push(first[r as usize]);
            }
            if id as usize == first.len() {
                first.push(ids.len() as u32);
                ids.push(ids.len() as u32);
            } else {
                ids.push(first[id as usize]);
            }
        };
        // Each task's requires, then its provides; the last task's rows may be unfinished.
        let (requires, provides) = (&n.rows.requires, &n.rows.provides);
        for task in 0..=requires.ends.len().max(provides.ends.len()) {
            for &id in requires
                .row_so_far(task)
                .iter()
                .chain(provides.row_so_far(task))
            {
                see(id, &mut ids);
            }
        }
        for &(_, id) in repeated {
            ids.push(first[id as usize]);
        }
        debug_assert_eq!(ids.len(), self.count as usize);
        self.ids = ids;
    }

    /// The tokens as numbered in the first pass, taken if that holds: no two occurrences the
    /// recent table missed have one hash. Otherwise the occurrences are to be sorted
    /// ([`BulkTokens::sorting`]).
    fn numbering(&mut self) -> Option<Numbered> {
        if self.numbered.is_some() && !hashes_distinct(&self.sorted) {
            self.give_up_numbering();
        }
        self.numbered.take()
    }

    /// Adds an occurrence of `tok`; returns its id in the numbering, while there is one.
    // Measured: inlined into the pass (twice); as a call, saving and restoring registers was a
    // fifth of its instructions.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn occur(&mut self, tok: &str) -> u32 {
        let h = str_hash(tok);
        let position = self.count;
        let slot = &mut self.recent[h as usize % RECENT_SLOTS];
        if slot.1 != u32::MAX && slot.0 == h {
            let (earlier, id) = (slot.1, slot.2);
            match &self.numbered {
                // Two tokens with one hash: the sort's way will notice too.
                Some(n) if token_str(&n.text, &n.ends, id) != tok => {
                    self.give_up_numbering();
                    self.ids.push(earlier);
                }
                Some(_) => {}
                None => self.ids.push(earlier),
            }
            self.count += 1;
            id
        } else {
            let id = self.numbered.as_ref().map_or(0, |n| n.ends.len() as u32);
            *slot = (h, position, id);
            if self.numbered.is_none() {
                self.ids.push(position);
            }
            self.count += 1;
            self.sorted.push(occurrence(h, position));
            if let Some(n) = &mut self.numbered {
                n.text.push_str(tok);
                n.ends.push(n.text.len() as u32);
            }
            id
        }
    }
}

/// What the sort of a batch's occurrences decides.
enum Sorted {
    /// The first pass's numbering holds.
    Numbered(Numbered),
    /// Each occurrence's earlier one, for a pass over the definitions.
    Ids(BulkTokens),
}

impl BulkTokens {
    #[cfg(test)]
    fn new(new: &[Task]) -> Self {
        let mut occurrences = Occurrences::new(false, new.len());
        for t in new {
            occurrences.push(t);
        }
        Self::sorting(occurrences, Threads::One)
    }

    /// From every token occurrence of the batch, in definition order (their numbering given
    /// up, see [`Occurrences::numbering`]): the ones the recent table missed sorted on
    /// `threads`, then each given the first of its hash.
    fn sorting(occurrences: Occurrences, threads: Threads) -> Self {
        let Occurrences {
            mut ids,
            count: _,
            mut sorted,
            recent,
            numbered: _,
        } = occurrences;
        drop(recent);
        sort_occurrences(&mut sorted, threads);
        let mut run = None;
        for o in &sorted {
            let (h, position) = (occurrence_hash(o), o[2]);
            ids[position as usize] = match run {
                Some((rh, first)) if rh == h => first,
                _ => {
                    run = Some((h, position));
                    position
                }
            };
        }
        Self { ids }
    }
}

impl Sorted {
    /// The numbering if it held ([`Occurrences::numbering`]), the occurrences sorted on
    /// `threads` otherwise.
    fn of(numbered: Option<Numbered>, occurrences: Occurrences, threads: Threads) -> Self {
        match numbered {
            Some(numbered) => Self::Numbered(numbered),
            None => Self::Ids(BulkTokens::sorting(occurrences, threads)),
        }
    }
}

/// The occurrences that may share a hash with another, sorted by hash, then position: every
/// occurrence whose hash another has is among them, so equal hashes are side by side, as if all
/// were sorted. Each hash sets a bit of a table of 16 bits per occurrence (2 MiB at 10^6; at 32
/// bits, 4 MiB, the check took half as long again, at 8 the sort of the suspects cost what the
/// smaller table saved); only the hashes of bits set twice are sorted (some 30 000 at 10^6,
/// where every hash differs), not all of them.
fn clashing(occurrences: &[Occurrence]) -> Vec<Occurrence> {
    if occurrences.len() < 2 {
        return Vec::new();
    }
    // At least a word.
    let log2 = (occurrences.len() * 16)
        .next_power_of_two()
        .trailing_zeros()
        .max(6);
    // The hash's high bits, mixed: its low ones chose the recent table's slots.
    let bit = |o: &Occurrence| {
        (occurrence_hash(o).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - log2)) as usize
    };
    let mut table = vec![0u64; (1 << log2) / 64];
    let mut clashes = Vec::new();
    for o in occurrences {
        let b = bit(o);
        let (word, mask) = (&mut table[b / 64], 1u64 << (b % 64));
        if *word & mask != 0 {
            clashes.push(b);
        }
        *word |= mask;
    }
    if clashes.is_empty() {
        return Vec::new();
    }
    table.fill(0);
    for b in clashes {
        table[b / 64] |= 1 << (b % 64);
    }
    let mut suspects: Vec<Occurrence> = occurrences
        .iter()
        .filter(|o| {
            let b = bit(o);
            table[b / 64] & (1 << (b % 64)) != 0
        })
        .copied()
        .collect();
    // Arrays compare element by element: by hash (high half, low half), then position.
    suspects.sort_unstable();
    suspects
}

/// What the rows of a batch's new tokens tell, read in one pass (at 10^6 tokens, each pass
/// over the two tables took some 3 ms).
struct TokenChecks {
    /// Tokens (rows) without a provider.
    unprovided: Vec<u32>,
    /// The first [`UNREQUIRED_LISTED`] tokens that no task requires...
    unrequired: Vec<u32>,
    /// ...and how many more.
    more_unrequired: usize,
    /// Whether each token's last provider comes before its first dependent.
    ordered: bool,
}

impl TokenChecks {
    fn of(providers: &Csr, dependents: &Csr) -> Self {
        let mut checks = Self {
            unprovided: Vec::new(),
            unrequired: Vec::new(),
            more_unrequired: 0,
            ordered: true,
        };
        let (mut p, mut d) = (0, 0);
        for (r, (&p_end, &d_end)) in (0u32..).zip(providers.ends.iter().zip(&dependents.ends)) {
            let (p_end, d_end) = (p_end as usize, d_end as usize);
            if p_end == p {
                checks.unprovided.push(r);
            } else if d_end == d {
                if checks.unrequired.len() < UNREQUIRED_LISTED {
                    checks.unrequired.push(r);
                } else {
                    checks.more_unrequired += 1;
                }
            } else if providers.items[p_end - 1] >= dependents.items[d] {
                checks.ordered = false;
            }
            (p, d) = (p_end, d_end);
        }
        checks
    }
}

/// What validation's first pass over a batch's definitions gathers, besides each task's own
/// errors.
struct FirstPass {
    /// Each task's name hash, with its position in the batch.
    names: Vec<Occurrence>,
    /// Token occurrences provided and required in all.
    provided: usize,
    required: usize,
    any_when: bool,
    any_group: bool,
}

impl FirstPass {
    /// Checks each task of `new` alone (into `errors`), and adds its token occurrences to
    /// `occurrences` if given.
    fn of(
        new: &[Task],
        capacity: &BTreeMap<String, u32>,
        errors: &mut Vec<GraphError>,
        mut occurrences: Option<&mut Occurrences>,
    ) -> Self {
        let mut first = Self {
            names: Vec::with_capacity(new.len()),
            provided: 0,
            required: 0,
            any_when: false,
            any_group: false,
        };
        for (t, i) in new.iter().zip(0u32..) {
            check_task(t, capacity, errors);
            first.names.push(occurrence(name_hash(&t.name), i));
            first.provided += t.meta.provides.len();
            first.required += t.meta.requires.len();
            first.any_when |= !t.meta.more.when.is_empty();
            first.any_group |= t.meta.more.group.is_some();
            if let Some(o) = occurrences.as_deref_mut() {
                o.push(t);
            }
        }
        first
    }
}

/// Whether a large batch's token occurrences are better hashed and sorted on a thread of their
/// own, beside the rest of validation's first pass: where the process may use a second core.
fn second_core() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// `a` on a second thread and `b` on this one, at once; one after the other on this one if no
/// thread can be had. A panic in either is this thread's.
fn both<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    // Taken by the thread, or by this one if there is none.
    let a = std::sync::Mutex::new(Some(a));
    let take = || {
        a.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(|a| a())
    };
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("pexen-validate".into())
            .spawn_scoped(scope, take);
        let b = b();
        let a = match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => take(),
        };
        (a.expect("taken once"), b)
    })
}

/// How many threads a step of validation may take: [`Threads::Two`] once the rest of its first
/// pass is done and a second core idles (see [`both`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Threads {
    One,
    Two,
}

/// Whether no two of `occurrences` have one hash (see [`clashing`]).
fn hashes_distinct(occurrences: &[Occurrence]) -> bool {
    !clashing(occurrences)
        .windows(2)
        .any(|w| occurrence_hash(&w[0]) == occurrence_hash(&w[1]))
}

/// Sorts occurrences by hash, then position: each moved in place into its part (by the hashes'
/// top bits, see [`partition_in_place`]), then each part sorted where it lies (see
/// [`sort_part`]); on two threads, each sorts half of the parts.
fn sort_occurrences(occurrences: &mut [Occurrence], threads: Threads) {
    let bits = if occurrences.len() < 1 << 14 {
        0
    } else {
        OCCURRENCE_PARTS_LOG2
    };
    let part = |o: &Occurrence| o[0].checked_shr(32 - bits).unwrap_or(0) as usize;
    let mut ends = vec![0u32; 1 << bits];
    for o in occurrences.iter() {
        ends[part(o)] += 1;
    }
    let mut next = Vec::with_capacity(ends.len());
    let mut total = 0;
    for end in &mut ends {
        next.push(total);
        total += *end;
        *end = total;
    }
    partition_in_place(occurrences, &mut next, &ends, part);
    let shift = 32 - bits - PART_DIGIT_BITS;
    // The parts that end at `ends`, in `parts`, which starts at `offset` of `occurrences`.
    let sort_parts = |parts: &mut [Occurrence], offset: usize, ends: &[u32]| {
        let mut scratch = Vec::new();
        let mut start = 0;
        for &end in ends {
            let end = end as usize - offset;
            sort_part(&mut parts[start..end], shift, &mut scratch);
            start = end;
        }
    };
    let half = ends.len() / 2;
    if threads == Threads::One || half == 0 {
        sort_parts(occurrences, 0, &ends);
        return;
    }
    let middle = ends[half - 1] as usize;
    let (low, high) = occurrences.split_at_mut(middle);
    both(
        || sort_parts(low, 0, &ends[..half]),
        || sort_parts(high, middle, &ends[half..]),
    );
}

/// Parts of [`sort_occurrences`]. Few, so that the pages where the parts grow stay in the TLB
/// (most likely what went wrong with 4096 parts: each step of the partition waits for the one
/// before, and a chain's validation took a quarter longer at 10^6 tasks).
const OCCURRENCE_PARTS_LOG2: u32 = 8;

/// The bits of a hash by which [`sort_part`] distributes a part: 4096 runs, of a few entries
/// when hashes are well spread (at 10^6 tasks a part holds 8 000 occurrences for a chain, 20 000
/// for a random DAG of degree 4).
const PART_DIGIT_BITS: u32 = 12;

/// Moves every entry into its part, without a second array: part `p` ends at `ends[p]`, and
/// `next[p]` is where its next entry goes (its start, from a counting pass). Each part's slots
/// from `next[p]` on are swept in order: the entry found in a slot goes to the next slot of its
/// own part, and the one found there comes back into the swept slot, to be moved on a later
/// sweep. Every step puts one entry in its part, so the sweeps take as many steps as there are
/// entries; and since where an entry goes depends only on the entry read in order, not on the
/// one it displaced, the steps' memory accesses overlap (one entry carried from slot to slot,
/// as an American flag sort does, waited for each slot in turn: at 10^6 tasks a third of a
/// chain's validation). Entries do not keep their order within a part.
fn partition_in_place(
    entries: &mut [Occurrence],
    next: &mut [u32],
    ends: &[u32],
    part: impl Fn(&Occurrence) -> usize,
) {
    let mut unplaced = true;
    while unplaced {
        unplaced = false;
        for p in 0..next.len() {
            let (start, end) = (next[p] as usize, ends[p] as usize);
            for slot in start..end {
                let q = part(&entries[slot]);
                entries.swap(slot, next[q] as usize);
                next[q] += 1;
            }
            unplaced |= next[p] < ends[p];
        }
    }
}

/// Sorts `part` (hashes with their top bits in common, each with its position): a counting pass
/// on the [`PART_DIGIT_BITS`] bits from `shift` up in the hashes' high half into `scratch`, then
/// each run of one value of these bits sorted, and copied back. A part fits in the caches, where a counting pass costs
/// little; sorting parts of a few hundred entries by comparisons alone was half of a chain's
/// validation at 10^6 tasks.
fn sort_part(part: &mut [Occurrence], shift: u32, scratch: &mut Vec<Occurrence>) {
    const DIGITS_MASK: usize = (1 << PART_DIGIT_BITS) - 1;
    if part.len() < 2 {
        return;
    }
    let digit = |o: &Occurrence| (o[0] >> shift) as usize & DIGITS_MASK;
    let mut next = [0u32; 1 << PART_DIGIT_BITS];
    for o in part.iter() {
        next[digit(o)] += 1;
    }
    let mut total = 0;
    for slot in &mut next {
        let count = *slot;
        *slot = total;
        total += count;
    }
    scratch.clear();
    scratch.resize(part.len(), [0; 3]);
    for &entry in part.iter() {
        let d = digit(&entry);
        scratch[next[d] as usize] = entry;
        next[d] += 1;
    }
    // Now `next[d]` is where the run of digit `d` ends.
    let mut start = 0;
    for &end in &next {
        let run = &mut scratch[start..end as usize];
        if run.len() > 1 {
            run.sort_unstable();
        }
        start = end as usize;
    }
    part.copy_from_slice(scratch);
}

/// Whether [`bucket_order`] partitions `n` positions for a table of `2^bits` buckets (else it
/// keeps their order: small batches, small tables).
fn partitioned(n: usize, bits: u32) -> bool {
    n >= 1 << 14 && bits > BUCKET_PARTS_LOG2
}

/// Partitions of a table in [`bucket_order`]: each a few KiB of it at 10^6 tasks.
const BUCKET_PARTS_LOG2: u32 = 12;

/// The positions `0..hashes.len()`, each with its hash, ordered by the part of each hash that
/// picks a bucket of `table` (its high bits first), ties in definition order: one counting pass
/// over the top bits of the bucket index, so that inserting in this order walks the table's
/// memory front to back. Small batches keep their order.
fn bucket_order(hashes: &[u64], table: &HashTable<u32>) -> Vec<(u64, u32)> {
    const PARTS_LOG2: u32 = BUCKET_PARTS_LOG2;
    let n = hashes.len() as u32;
    // hashbrown's bucket index is the hash's low bits, as many as the table has buckets.
    let buckets = (table.capacity() / 7 * 8).max(1).next_power_of_two();
    let bits = buckets.trailing_zeros();
    if !partitioned(hashes.len(), bits) {
        return hashes.iter().copied().zip(0..).collect();
    }
    let shift = bits - PARTS_LOG2;
    let mask = (buckets - 1) as u64;
    let part = |h: u64| ((h & mask) >> shift) as usize;
    let mut next = vec![0u32; 1 << PARTS_LOG2];
    for &h in hashes {
        next[part(h)] += 1;
    }
    let mut total = 0;
    for slot in &mut next {
        let count = *slot;
        *slot = total;
        total += count;
    }
    let mut out = vec![(0, 0); n as usize];
    for (&h, i) in hashes.iter().zip(0..) {
        let p = part(h);
        out[next[p] as usize] = (h, i);
        next[p] += 1;
    }
    out
}

/// The tasks of a run's first batch `all` whose name an earlier task has, in definition order,
/// from `entries` (each task's name hash with its position): those that may share a hash,
/// sorted ([`clashing`]), have equal names side by side, the first one first, with no table of
/// names (built only if a lookup by name needs it, see [`Graph::index_all_names`]) and no walk
/// over the tasks in the table's order (a cache miss per task at 10^6, twice when a probe
/// compared names).
fn duplicates_sorted(all: &[Task], entries: &[Occurrence]) -> Vec<u32> {
    let entries = clashing(entries);
    let mut duplicates = Vec::new();
    let mut run = 0;
    for k in 1..entries.len() {
        if occurrence_hash(&entries[k]) != occurrence_hash(&entries[k - 1]) {
            run = k;
            continue;
        }
        // Equal hashes: a duplicate if a task before it in the run has its name (two names
        // may share a hash).
        let name = &all[entries[k][2] as usize].name;
        if entries[run..k]
            .iter()
            .any(|e| all[e[2] as usize].name == *name)
        {
            duplicates.push(entries[k][2]);
        }
    }
    duplicates.sort_unstable();
    duplicates
}

fn str_hash(s: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(s)
}

fn name_hash(name: &TaskName) -> u64 {
    str_hash(name.as_str())
}

/// Token `id`'s name in the token text.
#[inline]
fn token_str<'a>(text: &'a str, ends: &[u32], id: u32) -> &'a str {
    let start = if id == 0 {
        0
    } else {
        ends[id as usize - 1] as usize
    };
    &text[start..ends[id as usize] as usize]
}

/// The edges among the tasks of a batch being validated (`start..`), through the tokens the
/// batch created (`old_tokens..`): the only edges that can close a cycle.
struct NewEdges<'a> {
    start: usize,
    old_tokens: usize,
    providers: &'a Csr,
    dependents: &'a Csr,
}

impl NewEdges<'_> {
    /// Batch-relative providers of `token` (none for older tokens).
    fn providers(&self, token: u32) -> &[u32] {
        (token as usize)
            .checked_sub(self.old_tokens)
            .map_or(&[][..], |r| &self.providers[r])
    }

    fn dependents(&self, token: u32) -> &[u32] {
        (token as usize)
            .checked_sub(self.old_tokens)
            .map_or(&[][..], |r| &self.dependents[r])
    }

    fn rel(&self, task: u32) -> usize {
        task as usize - self.start
    }
}

/// Problems visible in one task alone.
fn check_task(t: &Task, capacity: &BTreeMap<String, u32>, errors: &mut Vec<GraphError>) {
    for r in &t.meta.claims {
        if t.meta.uses.contains(r) {
            errors.push(GraphError::ClaimsAndUses {
                task: t.name.clone(),
                resource: r.to_string(),
            });
        }
    }
    for (slot, &wanted) in &t.meta.more.slots {
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

/// Kahn's algorithm over the token tables: true when `all[start..]` has no cycle. This is the
/// common case and costs a counter per task, where building a petgraph graph of every edge
/// costs far more; petgraph only comes in to name the cycles when there are some.
fn acyclic(requires: &Csr, provides: &Csr, edges: &NewEdges<'_>) -> bool {
    let n = requires.len();
    let mut indegree: Vec<u32> = requires
        .iter()
        .map(|req| req.iter().map(|&t| edges.providers(t).len() as u32).sum())
        .collect();
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = ready.pop() {
        seen += 1;
        for &t in &provides[i] {
            for &d in edges.dependents(t) {
                let d = edges.rel(d);
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.push(d);
                }
            }
        }
    }
    seen == n
}

/// Reports every cycle among `all[start..]`, each with its full path.
fn find_cycles(
    all: &[Task],
    requires: &Csr,
    provides: &Csr,
    edges: &NewEdges<'_>,
    errors: &mut Vec<GraphError>,
) {
    if acyclic(requires, provides, edges) {
        return;
    }
    let start = edges.start;
    let n = requires.len();
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(n, n);
    for _ in 0..n {
        g.add_node(());
    }
    let mut has_edges = false;
    for (i, req) in requires.iter().enumerate() {
        for &tok in req {
            for &p in edges.providers(tok) {
                g.add_edge(NodeIndex::new(edges.rel(p)), NodeIndex::new(i), ());
                has_edges = true;
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
#[path = "graph_tests.rs"]
mod tests;

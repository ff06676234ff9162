//! Validation of task graphs: every problem at once.

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
fn many_unrequired_tokens_are_summarised() {
    let n = crate::graph::UNREQUIRED_LISTED + 5;
    let tasks: Vec<Task> = (0..n)
        .map(|i| t(&format!("t{i}")).provides([format!("k{i}")]))
        .collect();
    let (_, w) = Graph::build(&tasks, &BTreeMap::new()).unwrap();
    assert_eq!(w.len(), crate::graph::UNREQUIRED_LISTED + 1);
    assert_eq!(
        w[0],
        "token `k0` is provided by `t0` but required by no task"
    );
    assert_eq!(
        w[crate::graph::UNREQUIRED_LISTED],
        "5 more tokens are provided but required by no task"
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
    assert_eq!(g.providers(0), [0]);
    assert_eq!(g.token_count(), 1);
    all.pop();
    all.push(t("d").requires(["x"]).provides(["y"]));
    all.push(t("e").requires(["y"]));
    assert!(g.extend(&all, 2, &BTreeMap::new()).unwrap().is_empty());
    assert_eq!(g.providers_of(3), [2]);
}

#[test]
fn duplicates_in_a_large_first_batch_are_found_by_sorting_and_reported_in_definition_order() {
    // A first batch is checked by sorting its name hashes, with no table of names.
    let n = 40_000;
    let mut tasks: Vec<Task> = (0..n).map(|i| t(&format!("task{i}"))).collect();
    tasks.push(t("task31000"));
    tasks.push(t("task7"));
    tasks.push(t("task7"));
    let e = errors(&tasks);
    let names: Vec<String> = e
        .iter()
        .map(|e| match e {
            GraphError::DuplicateName { task } => task.to_string(),
            other => panic!("unexpected error {other}"),
        })
        .collect();
    assert_eq!(names, ["task31000", "task7", "task7"]);
    let ok: Vec<Task> = (0..n).map(|i| t(&format!("task{i}"))).collect();
    assert_eq!(
        Graph::build(&ok, &BTreeMap::new())
            .map(|(g, _)| g.len())
            .ok(),
        Some(n)
    );
}

/// Token ids as the one-by-one interning gives them: in order of first occurrence (each task's
/// requires, then its provides).
fn first_occurrence_ids(tasks: &[Task]) -> HashMap<String, u32> {
    let mut ids = HashMap::new();
    for t in tasks {
        for tok in t.meta.requires.iter().chain(&t.meta.provides) {
            let next = ids.len() as u32;
            ids.entry(tok.to_string()).or_insert(next);
        }
    }
    ids
}

#[test]
fn a_large_batch_interns_its_tokens_in_bulk_with_the_ids_of_one_by_one() {
    // Above the size at which a first batch's tokens are interned in bulk: a random DAG with
    // repeated tokens within a task, and shared tokens with several providers.
    let n = 3 * BULK_TASKS as u64;
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let mut below = |k: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % k
    };
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            let task = t(&format!("t{i}")).provides([format!("k{i}"), format!("s{}", i % 7)]);
            if i < 10 {
                task
            } else {
                let a = below(i);
                task.requires([format!("k{a}"), format!("k{}", below(i)), format!("k{a}")])
            }
        })
        .collect();
    let (g, warnings) = Graph::build(&tasks, &BTreeMap::new()).unwrap();
    let ids = first_occurrence_ids(&tasks);
    assert_eq!(g.token_count(), ids.len());
    // Looked up without the table of ids (left unbuilt by the bulk batch), then with it.
    assert!(!g.tokens_indexed());
    assert_eq!(g.token_id("s6"), Some(ids["s6"]));
    let mut g = g;
    g.index_tokens();
    assert!(g.tokens_indexed());
    for (name, &id) in &ids {
        assert_eq!(g.token_name(id), name);
        assert_eq!(g.token_id(name), Some(id));
    }
    assert_eq!(g.token_id("k-none"), None);
    for (i, task) in tasks.iter().enumerate() {
        let mut want: Vec<u32> = Vec::new();
        for tok in &task.meta.requires {
            if !want.contains(&ids[tok.as_str()]) {
                want.push(ids[tok.as_str()]);
            }
        }
        assert_eq!(&g.requires[i], want.as_slice());
        let provides: Vec<u32> = task.meta.provides.iter().map(|p| ids[p.as_str()]).collect();
        assert_eq!(&g.provides[i], provides.as_slice());
    }
    assert_eq!(g.providers(ids["s3"]).len(), (n as usize + 3) / 7);
    assert_eq!(g.providers(ids["k5"]), [5]);
    // Unrequired tokens (the shared `sN`, some `kN`) are listed in id order.
    let required: std::collections::HashSet<&str> = tasks
        .iter()
        .flat_map(|t| t.meta.requires.iter().map(crate::task::Token::as_str))
        .collect();
    let mut by_id: Vec<(&String, u32)> = ids.iter().map(|(k, &v)| (k, v)).collect();
    by_id.sort_unstable_by_key(|&(_, id)| id);
    let listed: Vec<String> = by_id
        .into_iter()
        .filter(|(k, _)| !required.contains(k.as_str()))
        .take(UNREQUIRED_LISTED)
        .map(|(k, id)| {
            format!(
                "token `{k}` is provided by `{}` but required by no task",
                tasks[g.providers(id)[0] as usize].name
            )
        })
        .collect();
    assert_eq!(warnings[..UNREQUIRED_LISTED], listed[..]);
    assert!(warnings[0].starts_with("token `s0` is provided by `t0`"));
}

#[test]
fn a_large_batch_reports_every_error_as_one_by_one() {
    let n = 2 * BULK_TASKS;
    let mut tasks: Vec<Task> = (0..n)
        .map(|i| {
            let task = t(&format!("t{i}")).provides([format!("k{i}")]);
            if i == 0 {
                task
            } else {
                task.requires([format!("k{}", i - 1)])
            }
        })
        .collect();
    tasks.push(t("late").requires(["zz", "k3", "yy"]));
    tasks[5] = t("t5").requires(["k6"]).provides(["k5"]);
    let e = errors(&tasks);
    let text: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(
        text[0].contains("`late`") && text[0].contains("`zz`"),
        "{text:?}"
    );
    assert!(
        text[1].contains("`late`") && text[1].contains("`yy`"),
        "{text:?}"
    );
    assert_eq!(text[2], "dependency cycle: t5 -> t6 -> t5");
}

#[test]
fn a_large_batch_checked_on_two_threads_reports_each_kind_of_error_in_order() {
    // The tasks' own errors and the duplicate names (this thread), the tokens' (the other):
    // all of them, in the order of a batch checked on one thread.
    let n = 2 * BULK_TASKS;
    let mut tasks: Vec<Task> = (0..n)
        .map(|i| t(&format!("t{i}")).provides([format!("k{i}")]))
        .collect();
    tasks[7] = t("t7").claims(["db"]).uses(["db"]).provides(["k7"]);
    tasks[9] = t("t3").provides(["k9"]);
    tasks[n - 1] = t("last").requires(["nowhere"]);
    let text: Vec<String> = errors(&tasks).iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 3, "{text:?}");
    assert!(
        text[0].contains("`t7`") && text[0].contains("`db`"),
        "{text:?}"
    );
    assert!(text[1].contains("`t3`"), "{text:?}");
    assert!(
        text[2].contains("`last`") && text[2].contains("`nowhere`"),
        "{text:?}"
    );
}

/// Occurrences as `BulkTokens` has them before sorting (in position order), with hashes from
/// `hash(position, previous)`: the previous occurrences are there to repeat a hash.
fn occurrences(n: u32, mut hash: impl FnMut(u32, &[Occurrence]) -> u64) -> Vec<Occurrence> {
    let mut out: Vec<Occurrence> = Vec::new();
    for o in 0..n {
        let h = hash(o, &out);
        out.push([(h >> 32) as u32, h as u32, o]);
    }
    out
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn a_part_of_hashes_sorts_like_a_comparison_sort() {
    // Well spread hashes, equal ones (the same token again), and many with the same 12 bits
    // below the part's (one run of the counting pass).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut part = occurrences(3000, |o, before| {
        let x = xorshift(&mut x);
        // A part: the top 8 bits in common.
        0xAB << 56
            | match o % 5 {
                0 => 42 << 44 | (x & 0xFFF_FFFF_FFFF),
                1 if o > 10 => occurrence_hash(&before[(o / 2) as usize]),
                _ => x,
            } & ((1 << 56) - 1)
    });
    let mut expected = part.clone();
    expected.sort_unstable();
    let mut scratch = Vec::new();
    sort_part(&mut part, 12, &mut scratch);
    assert_eq!(part, expected);
}

#[test]
fn occurrences_partitioned_in_place_sort_like_a_comparison_sort() {
    // Enough to be partitioned: well spread hashes, repeated ones, a crowded part (a tenth in
    // the part of the top bits 0x5A) and many empty parts (the top bits of every other hash
    // are below 0x40).
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut all = occurrences(50_000, |o, before| {
        let x = xorshift(&mut x);
        match o % 10 {
            0 => 0x5A << 56 | x >> 8,
            1 | 2 if o > 10 => occurrence_hash(&before[(x % u64::from(o)) as usize]),
            3..=5 => x & (0xF << 58 | ((1 << 56) - 1)),
            _ => x >> 4,
        }
    });
    let mut expected = all.clone();
    expected.sort_unstable();
    // Half of the parts sorted on another thread: the same order.
    let mut on_two = all.clone();
    sort_occurrences(&mut on_two, Threads::Two);
    assert_eq!(on_two, expected);
    sort_occurrences(&mut all, Threads::One);
    assert_eq!(all, expected);
    // Below the size that is partitioned too (one part).
    let mut few = all[..1000].to_vec();
    few.reverse();
    let mut expected = few.clone();
    expected.sort_unstable();
    sort_occurrences(&mut few, Threads::One);
    assert_eq!(few, expected);
}

#[test]
fn a_partition_in_place_puts_each_entry_in_its_part() {
    // Parts by the position modulo 5, counted as `sort_occurrences` does; part 3 empty.
    let part = |o: &Occurrence| match o[2] % 5 {
        3 => 4,
        p => p as usize,
    };
    let mut entries: Vec<Occurrence> = (0..1000).rev().map(|o| [o * 7, 0, o]).collect();
    let mut ends = vec![0u32; 5];
    for e in &entries {
        ends[part(e)] += 1;
    }
    let mut next = Vec::new();
    let mut total = 0;
    for end in &mut ends {
        next.push(total);
        total += *end;
        *end = total;
    }
    let mut before = entries.clone();
    partition_in_place(&mut entries, &mut next, &ends, part);
    assert_eq!(next, ends);
    let mut start = 0;
    for (p, &end) in ends.iter().enumerate() {
        assert!(entries[start..end as usize].iter().all(|e| part(e) == p));
        start = end as usize;
    }
    // A permutation: nothing lost, nothing doubled.
    before.sort_unstable();
    entries.sort_unstable();
    assert_eq!(entries, before);
}

#[test]
fn bulk_ids_point_to_an_earlier_occurrence_of_the_same_token() {
    // As `Graph::bulk_id` expects them: an occurrence points to itself if and only if it is its
    // token's first, else to an earlier occurrence of its token. Tokens repeated within a task
    // and right after (found in the recent table), and tokens met again after more than the
    // table holds (sorted), enough of them to be partitioned.
    let tasks: Vec<Task> = (0..20_000u32)
        .map(|i| {
            t(&format!("t{i}"))
                .requires([
                    format!("k{}", i / 3),
                    format!("k{}", i / 3),
                    format!("q{}", i * 7919 % 9001),
                ])
                .provides([format!("p{}", i % 11)])
        })
        .collect();
    let occurrences: Vec<&str> = tasks
        .iter()
        .flat_map(|t| t.meta.requires.iter().chain(&t.meta.provides))
        .map(crate::task::Token::as_str)
        .collect();
    let mut first: HashMap<&str, u32> = HashMap::new();
    let ids = BulkTokens::new(&tasks).ids;
    assert_eq!(ids.len(), occurrences.len());
    let mut sorted = 0;
    for (o, (&id, &tok)) in ids.iter().zip(&occurrences).enumerate() {
        let o = o as u32;
        let is_first = *first.entry(tok).or_insert(o) == o;
        assert_eq!(id == o, is_first, "occurrence {o} ({tok})");
        assert!(id <= o);
        assert_eq!(occurrences[id as usize], tok, "occurrence {o}");
        // Met again after the recent table lost it: it points to the first occurrence, as
        // the sort gives it.
        if !is_first && id == first[tok] && o - id > 3 {
            sorted += 1;
        }
    }
    assert!(
        sorted > 1000,
        "only {sorted} occurrences came through the sort"
    );
}

#[test]
fn a_hash_collision_in_bulk_interning_falls_back_to_one_by_one() {
    // Two different tokens given as one by their hashes: `token_rows` notices when it
    // compares the text, and `extend` starts again without the bulk ids.
    let tasks = vec![
        t("a").provides(["x"]),
        t("b").requires(["y"]).provides(["y2"]),
    ];
    let mut g = Graph::default();
    let mut bulk = BulkTokens { ids: vec![0, 0, 2] };
    let mut errors = Vec::new();
    let rows = g.token_rows(&tasks, 0, 2, Some(&mut bulk), &mut errors);
    assert!(rows.is_err());
    let mut g = Graph::default();
    let rows = g.token_rows(&tasks, 0, 2, None, &mut errors);
    assert!(rows.is_ok());
    assert_eq!(g.token_count(), 3);
    assert_eq!(g.token_id("y"), Some(1));
}

#[test]
fn tasks_added_after_a_bulk_batch_find_its_tokens() {
    let n = BULK_TASKS + 5;
    let mut all: Vec<Task> = (0..n)
        .map(|i| t(&format!("t{i}")).provides([format!("k{i}")]))
        .collect();
    let (mut g, _) = Graph::build(&all, &BTreeMap::new()).unwrap();
    assert!(!g.tokens_indexed());
    all.push(t("late").requires(["k17", "new"]).provides(["new"]));
    all.push(t("again").provides(["k3"]));
    let e = g.extend(&all, n, &BTreeMap::new()).unwrap_err().0;
    let text: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].contains("`again`") && text[0].contains("`k3`"),
        "{text:?}"
    );
    assert_eq!(text[1], "dependency cycle: late -> late");
    all.truncate(n);
    all.push(t("late").requires(["k17"]).provides(["new"]));
    assert!(g.extend(&all, n, &BTreeMap::new()).is_ok());
    assert_eq!(g.token_id("k17"), Some(17));
    assert_eq!(g.token_id("new"), Some(n as u32));
    assert_eq!(g.providers_of(n as u32), [17]);
}

#[test]
fn names_forgotten_by_a_run_are_found_and_checked_again() {
    let mut all: Vec<Task> = (0..3).map(|i| t(&format!("t{i}"))).collect();
    let (mut g, _) = Graph::build(&all, &BTreeMap::new()).unwrap();
    g.forget_names();
    assert_eq!(g.index_of(&all, &"t2".into()), Some(2));
    assert_eq!(g.index_of(&all, &"t9".into()), None);
    // An added task named like an old one is still a duplicate.
    all.push(t("t1"));
    let e = g.extend(&all, 3, &BTreeMap::new()).unwrap_err().0;
    assert_eq!(e, [GraphError::DuplicateName { task: "t1".into() }]);
    all.truncate(3);
    all.push(t("t3"));
    assert!(g.extend(&all, 3, &BTreeMap::new()).is_ok());
    assert_eq!(g.index_of(&all, &"t3".into()), Some(3));
    assert_eq!(g.index_of(&all, &"t0".into()), Some(0));
}

#[test]
fn duplicates_in_a_large_added_batch_are_found_in_bucket_order_and_reported_in_definition_order() {
    // Above the size at which names go into their table in bucket order: added tasks are
    // checked against the table, which holds the first batch's names too.
    let mut all: Vec<Task> = (0..10).map(|i| t(&format!("old{i}"))).collect();
    let (mut g, _) = Graph::build(&all, &BTreeMap::new()).unwrap();
    all.extend((0..40_000).map(|i| t(&format!("task{i}"))));
    all.push(t("task31000"));
    all.push(t("old3"));
    all.push(t("task7"));
    let e = g.extend(&all, 10, &BTreeMap::new()).unwrap_err().0;
    let names: Vec<String> = e.iter().map(ToString::to_string).collect();
    let expected: Vec<String> = ["task31000", "old3", "task7"]
        .iter()
        .map(|n| GraphError::DuplicateName { task: (*n).into() }.to_string())
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn names_with_one_hash_are_told_apart_by_the_sorted_check() {
    // `duplicates_sorted` given hashes that collide: equal hashes with different names are not
    // duplicates; within a run of equal hashes, a name seen before is, whatever came between.
    let all: Vec<Task> = ["a", "b", "a", "c", "b", "d"]
        .iter()
        .map(|n| t(n))
        .collect();
    assert_eq!(
        duplicates_sorted(&all, &entries(&[7, 7, 7, 3, 7, 9])),
        [2, 4]
    );
    assert_eq!(
        duplicates_sorted(&all[3..], &entries(&[1, 1, 2])),
        Vec::<u32>::new()
    );
    // Many, with few hashes, so that most bits of `clashing`'s table are set many times: a
    // name's hash is its number modulo 1000, so that runs of equal hashes hold about 20 names.
    let many: Vec<Task> = (0..20_000)
        .map(|i| t(&format!("n{}", i % 19_999)))
        .collect();
    let hashes: Vec<u64> = (0..20_000u64)
        .map(|i| 0xDEAD_BEEF_0000_0000 | ((i % 19_999) % 1000))
        .collect();
    assert_eq!(duplicates_sorted(&many, &entries(&hashes)), [19_999]);
}

/// Name hashes as `duplicates_sorted` takes them, each with its position.
fn entries(hashes: &[u64]) -> Vec<Occurrence> {
    hashes
        .iter()
        .zip(0..)
        .map(|(&h, i)| occurrence(h, i))
        .collect()
}

#[test]
fn a_first_batch_leaves_the_table_of_names_to_the_first_lookup() {
    let all: Vec<Task> = (0..5).map(|i| t(&format!("t{i}"))).collect();
    let (mut g, _) = Graph::build(&all, &BTreeMap::new()).unwrap();
    // Looked through the tasks, then through the table once indexed.
    assert_eq!(g.index_of(&all, &"t3".into()), Some(3));
    g.index_all_names(&all);
    assert_eq!(g.names.len(), 5);
    assert_eq!(g.index_of(&all, &"t4".into()), Some(4));
    assert_eq!(g.index_of(&all, &"t9".into()), None);
}

#[test]
fn tasks_without_tokens_take_no_token_pass_and_later_tasks_still_link() {
    // Large enough for the bulk path, which tasks without tokens skip.
    let n = BULK_TASKS + 5;
    let mut all: Vec<Task> = (0..n).map(|i| t(&format!("t{i}"))).collect();
    let (mut g, warnings) = Graph::build(&all, &BTreeMap::new()).unwrap();
    assert!(warnings.is_empty());
    assert_eq!((g.len(), g.token_count()), (n, 0));
    assert!(g.providers_of(3).is_empty());
    all.push(t("p").provides(["x"]));
    all.push(t("q").requires(["x"]));
    assert!(g.extend(&all, n, &BTreeMap::new()).unwrap().is_empty());
    let x = g.token_id("x").unwrap();
    assert_eq!(g.providers(x), [n as u32]);
    assert_eq!(g.dependents(x).collect::<Vec<_>>(), [n as u32 + 1]);
    assert_eq!(g.providers_of(n as u32 + 1), [n as u32]);
}

/// Whether the first pass's numbering of `tasks`' tokens holds (see `Occurrences`). If not,
/// checks each occurrence's earlier one against a pass that never numbers.
fn numbered_in_first_pass(tasks: &[Task]) -> bool {
    let mut occurrences = Occurrences::new(true, tasks.len());
    for t in tasks {
        occurrences.push(t);
    }
    if occurrences.numbering().is_some() {
        return true;
    }
    let mut kept = Occurrences::new(false, tasks.len());
    for t in tasks {
        kept.push(t);
    }
    assert!(occurrences.ids == kept.ids, "each occurrence's earlier one");
    false
}

/// Checks the graph of a large batch against tokens interned one by one: ids, text, rows.
fn assert_ids_and_rows_of_one_by_one(tasks: &[Task]) {
    let (g, _) = Graph::build(tasks, &BTreeMap::new()).unwrap();
    let ids = first_occurrence_ids(tasks);
    assert_eq!(g.token_count(), ids.len());
    for (name, &id) in &ids {
        assert_eq!(g.token_name(id), name);
    }
    for (i, task) in tasks.iter().enumerate() {
        let mut want: Vec<u32> = Vec::new();
        for tok in &task.meta.requires {
            if !want.contains(&ids[tok.as_str()]) {
                want.push(ids[tok.as_str()]);
            }
        }
        assert_eq!(&g.requires[i], want.as_slice(), "requires of {}", task.name);
        let mut want: Vec<u32> = Vec::new();
        for tok in &task.meta.provides {
            if !want.contains(&ids[tok.as_str()]) {
                want.push(ids[tok.as_str()]);
            }
        }
        assert_eq!(&g.provides[i], want.as_slice(), "provides of {}", task.name);
    }
}

#[test]
fn a_chain_and_a_fan_out_are_numbered_in_the_first_pass() {
    // A chain whose tasks name a token twice in their requires and in their provides, and a
    // fan-out: every token met again while the recent table still holds it.
    let n = 2 * BULK_TASKS;
    let chain: Vec<Task> = (0..n)
        .map(|i| {
            let task = t(&format!("t{i}")).provides([format!("k{i}"), format!("k{i}")]);
            if i == 0 {
                task
            } else {
                let prev = format!("k{}", i - 1);
                task.requires([prev.clone(), prev])
            }
        })
        .collect();
    let fan_out: Vec<Task> = (0..n)
        .map(|i| {
            let task = t(&format!("t{i}"));
            if i == 0 {
                task.provides(["root"])
            } else {
                task.requires(["root"])
            }
        })
        .collect();
    for tasks in [chain, fan_out] {
        assert!(numbered_in_first_pass(&tasks));
        assert_ids_and_rows_of_one_by_one(&tasks);
    }
}

#[test]
fn a_token_met_again_after_the_recent_table_lost_it_is_numbered_by_the_sort() {
    // A chain that requires `k0` again every 5 000 tasks: by then other tokens took its slot.
    let n = 2 * BULK_TASKS;
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            let task = t(&format!("t{i}")).provides([format!("k{i}")]);
            match i {
                0 => task,
                _ if i % 5000 == 0 => task.requires([format!("k{}", i - 1), "k0".to_string()]),
                _ => task.requires([format!("k{}", i - 1)]),
            }
        })
        .collect();
    assert!(!numbered_in_first_pass(&tasks));
    assert_ids_and_rows_of_one_by_one(&tasks);
}

#[test]
fn a_numbering_given_up_midway_keeps_every_occurrence_s_earlier_one() {
    // A chain whose tasks name their tokens twice (their requires; the first quarter's, their
    // provides too), numbered in the first pass until, from halfway, its tasks also require a
    // token of their own provided by tasks defined after the chain (ids with no provider yet,
    // until past the slack): the occurrences so far are then taken from the numbering's rows.
    let n = 2 * BULK_TASKS;
    let mut tasks: Vec<Task> = (0..n)
        .map(|i| {
            let k = format!("k{i}");
            let task = if i < n / 4 {
                t(&format!("t{i}")).provides([k.clone(), k])
            } else {
                t(&format!("t{i}")).provides([k])
            };
            let prev = format!("k{}", i.saturating_sub(1));
            match i {
                0 => task,
                _ if i >= n / 2 => task.requires([prev.clone(), format!("f{i}"), prev]),
                _ => task.requires([prev.clone(), prev]),
            }
        })
        .collect();
    tasks.extend((n / 2..n).map(|i| t(&format!("u{i}")).provides([format!("f{i}")])));
    let mut occurrences = Occurrences::new(true, tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        occurrences.push(task);
        if i == n / 2 - 1 {
            assert!(occurrences.numbered.is_some(), "numbered up to halfway");
            assert!(occurrences.ids.is_empty());
        }
    }
    assert!(occurrences.numbered.is_none(), "given up past the slack");
    assert_eq!(occurrences.ids.len(), occurrences.count as usize);
    // As if kept all along: the same as a pass that never numbers.
    assert!(!numbered_in_first_pass(&tasks));
    assert_ids_and_rows_of_one_by_one(&tasks);
}

#[test]
fn two_tokens_with_one_hash_give_up_the_first_pass_numbering() {
    // The recent table is made to hold `x` under `y`'s hash, as if the two collided: the
    // occurrence of `y` compares its text with `x`'s and the numbering is given up.
    let mut occurrences = Occurrences::new(true, 2);
    occurrences.push(&t("a").provides(["x"]));
    let h = str_hash("y");
    occurrences.recent[h as usize % RECENT_SLOTS] = (h, 0, 0);
    occurrences.push(&t("b").requires(["y"]));
    assert!(occurrences.numbered.is_none());
    // Each occurrence's earlier one, as if kept all along: `y` took the forged slot's.
    assert_eq!(occurrences.ids, [0, 0]);
    occurrences.push(&t("c").requires(["x", "x"]).provides(["z"]));
    assert_eq!(occurrences.ids, [0, 0, 0, 0, 4]);
    // Without the forged slot, `y` is a token of its own.
    let mut occurrences = Occurrences::new(true, 2);
    occurrences.push(&t("a").provides(["x"]));
    occurrences.push(&t("b").requires(["y"]).provides(["x"]));
    let numbered = occurrences.numbered.as_ref().unwrap();
    assert_eq!(numbered.text, "xy");
    assert_eq!(&numbered.rows.requires[1], [1]);
    assert_eq!(&numbered.rows.provides[1], [0]);
}

#[test]
fn distinct_hashes_are_told_apart_from_a_repeated_one_past_the_table_s_clashes() {
    // 200 000 hashes: some 5 000 of them find their bit of the table set by another, so the
    // sort of the suspects runs, and finds them all distinct.
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut hashes: Vec<Occurrence> = (0..200_000)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            occurrence(rng, i)
        })
        .collect();
    assert!(hashes_distinct(&hashes));
    assert!(hashes_distinct(&hashes[..1]));
    assert!(hashes_distinct(&[]));
    // One hash again, anywhere: first and last, then two neighbours.
    let first = occurrence_hash(&hashes[0]);
    hashes.push(occurrence(first, 200_000));
    assert!(!hashes_distinct(&hashes));
    hashes.pop();
    hashes[1001] = occurrence(occurrence_hash(&hashes[1000]), 1001);
    assert!(!hashes_distinct(&hashes));
    assert!(!hashes_distinct(&hashes[1000..1002]));
}

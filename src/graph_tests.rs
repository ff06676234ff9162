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
fn duplicates_in_a_large_batch_are_found_in_bucket_order_and_reported_in_definition_order() {
    // Above the size at which names go into their table in bucket order.
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

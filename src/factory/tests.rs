//! Tests of [`load`] on small trees built in temporary directories, and on `factories/`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::task::{CommandSpec, OnFailure, Work};

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn executable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn names(tree: &TaskTree) -> Vec<&str> {
    tree.tasks.iter().map(|t| t.name.as_str()).collect()
}

fn command(task: &Task) -> &CommandSpec {
    match &task.work {
        Work::Command(spec) => spec,
        Work::Closure(_) => panic!("{} is not a command", task.name),
    }
}

fn errors(root: &Path) -> Vec<FactoryError> {
    load(root)
        .map(|t| panic!("loaded {:?}", names(&t)))
        .unwrap_err()
        .0
}

const TRUE: &str = "(run: Shell(\"true\"))";

#[test]
fn files_are_named_by_relative_path_in_sorted_order() {
    let dir = tree(&[
        ("net/tcp/connect.ron", TRUE),
        ("b.ron", TRUE),
        ("a.ron", TRUE),
        ("net/udp.ron", TRUE),
        ("Z.ron", TRUE),
    ]);
    let t = load(dir.path()).unwrap();
    assert_eq!(names(&t), ["Z", "a", "b", "net/tcp/connect", "net/udp"]);
    let spec = command(&t.tasks[3]);
    assert_eq!(spec.cwd.as_deref(), Some(t.root.join("net/tcp").as_path()));
    assert_eq!(spec.run, Run::Shell("true".into()));
}

#[test]
fn tasks_ron_holds_many_tasks_in_file_order() {
    let dir = tree(&[(
        "gen/many.tasks.ron",
        "{\"z\": (run: Shell(\"1\")), \"a/b\": (run: Cmd([\"echo\", \"x\"]), priority: 3)}",
    )]);
    let t = load(dir.path()).unwrap();
    assert_eq!(names(&t), ["gen/many/z", "gen/many/a/b"]);
    assert_eq!(t.tasks[1].meta.priority, 3);
    assert_eq!(command(&t.tasks[1]).program, None);
}

#[test]
fn executables_are_tasks_and_other_files_are_data() {
    let dir = tree(&[
        ("smoke/boot.sh", "#!/bin/sh\n"),
        ("smoke/data.txt", "x"),
        ("smoke/tool", ""),
    ]);
    executable(&dir.path().join("smoke/boot.sh"));
    let t = load(dir.path()).unwrap();
    assert_eq!(names(&t), ["smoke/boot.sh"]);
    let spec = command(&t.tasks[0]);
    let script = t.root.join("smoke/boot.sh");
    assert_eq!(
        spec.run,
        Run::Cmd(vec![script.to_string_lossy().into_owned()])
    );
    assert_eq!(spec.program.as_deref(), Some(script.as_path()));
    assert_eq!(spec.cwd.as_deref(), Some(t.root.join("smoke").as_path()));
}

#[test]
fn cmd_programs_inside_the_tree_are_recorded() {
    let dir = tree(&[
        (
            "t/x.ron",
            "(run: Cmd([\"./tool\", \"--port\", \"0\"]), cwd: \"sub\")",
        ),
        ("t/sub/tool", "data, not executable"),
        ("t/y.ron", "(run: Cmd([\"sub/missing\"]))"),
    ]);
    let t = load(dir.path()).unwrap();
    let tool = t.root.join("t/sub/tool");
    let spec = command(&t.tasks[0]);
    assert_eq!(spec.program.as_deref(), Some(tool.as_path()));
    assert_eq!(spec.cwd.as_deref(), Some(t.root.join("t/sub").as_path()));
    assert_eq!(spec.argv()[0], tool.to_string_lossy());
    assert_eq!(command(&t.tasks[1]).program, None);
}

#[test]
fn defaults_append_lists_merge_maps_and_override_scalars() {
    let dir = tree(&[
        (
            "_dir.ron",
            "(tags: [\"all\"], requires: [\"r0\"], env: {\"A\": \"1\", \"B\": \"1\"}, timeout: \"10s\", \
             retries: 2, slots: {\"mem\": 1}, capacity: {\"gpu\": 2})",
        ),
        ("top.ron", TRUE),
        ("sub/_dir.ron", "(tags: [\"sub\"], env: {\"B\": \"2\"}, timeout: \"5s\", on_failure: RunDependents)"),
        (
            "sub/t.ron",
            "(run: Shell(\"true\"), tags: [\"own\"], env: {\"C\": \"3\"}, retries: 0, slots: {\"gpu\": 1})",
        ),
    ]);
    let t = load(dir.path()).unwrap();
    assert_eq!(t.capacity, BTreeMap::from([("gpu".to_owned(), 2)]));
    let (sub, top) = (&t.tasks[0], &t.tasks[1]); // `sub` sorts before `top.ron`
    assert_eq!(top.meta.more.tags, ["all"]);
    assert_eq!(top.meta.more.timeout, Some(Duration::from_secs(10)));
    assert_eq!(top.meta.more.on_failure, OnFailure::SkipDependents);
    assert_eq!(sub.meta.more.tags, ["all", "sub", "own"]);
    assert_eq!(*sub.meta.requires, ["r0"]);
    assert_eq!(sub.meta.more.timeout, Some(Duration::from_secs(5)));
    assert_eq!(sub.meta.more.retries, 0);
    assert_eq!(sub.meta.more.on_failure, OnFailure::RunDependents);
    assert_eq!(sub.meta.more.slots.len(), 2);
    let env: Vec<_> = command(sub)
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(env, ["A=1", "B=2", "C=3"]);
}

#[test]
fn capacity_outside_the_root_is_an_error() {
    let dir = tree(&[
        (
            "sub/_dir.ron",
            "(\n  tags: [],\n  capacity: {\"gpu\": 1},\n)",
        ),
        ("sub/t.ron", TRUE),
    ]);
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1);
    assert!(
        matches!(&errs[0], FactoryError::CapacityOutsideRoot { location }
        if (location.line, location.col) == (3, 3)),
        "{:?}",
        errs[0]
    );
}

#[test]
fn hidden_entries_are_skipped() {
    let dir = tree(&[
        (".git/x.ron", TRUE),
        (".hidden.ron", TRUE),
        ("a/.b.ron", "broken"),
        ("seen.ron", TRUE),
    ]);
    assert_eq!(names(&load(dir.path()).unwrap()), ["seen"]);
}

#[test]
fn symlinks_are_followed_and_loops_reported() {
    let dir = tree(&[
        ("real/t.ron", TRUE),
        ("real/_dir.ron", "(tags: [\"real\"])"),
    ]);
    symlink(dir.path().join("real"), dir.path().join("alias")).unwrap();
    symlink(dir.path().join("real/t.ron"), dir.path().join("linked.ron")).unwrap();
    let t = load(dir.path()).unwrap();
    assert_eq!(names(&t), ["alias/t", "linked", "real/t"]);
    assert_eq!(t.tasks[0].meta.more.tags, ["real"]);

    symlink(dir.path(), dir.path().join("real/up")).unwrap();
    symlink("self", dir.path().join("self")).unwrap();
    let errs = errors(dir.path());
    let mut loops: Vec<_> = errs
        .iter()
        .map(|e| match e {
            FactoryError::SymlinkLoop { path } => path.strip_prefix(dir.path()).unwrap().to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    loops.sort();
    assert_eq!(
        loops,
        [
            Path::new("alias/up"),
            Path::new("real/up"),
            Path::new("self")
        ]
    );
}

#[test]
fn unknown_field_names_file_line_and_column() {
    let dir = tree(&[(
        "x.ron",
        "(\n    run: Shell(\"true\"),\n    priorty: 1,\n)\n",
    )]);
    let errs = errors(dir.path());
    let msg = errs[0].to_string();
    let expected = format!(
        "{}:3:5: unknown field `priorty` (did you mean `priority`?), expected one of `run`, `requires`",
        dir.path().join("x.ron").display()
    );
    assert!(msg.starts_with(&expected), "{msg}");
}

#[test]
fn semantic_errors_point_at_the_value() {
    let dir = tree(&[
        ("d.ron", "(\n  run: Shell(\"true\"),\n  timeout:   \"30 parsecs\",\n)"),
        ("e.ron", "(tags: [], run: Cmd([]))"),
        ("m.tasks.ron", "{\n  \"ok\": (run: Shell(\"x\")),\n  \"a//b\": (run: Shell(\"x\")),\n  \"ok\": (\n    run: Shell(\"x\"), \n    timeout: \"1 fortnight\")}"),
    ]);
    let errs = errors(dir.path());
    let at: Vec<_> = errs
        .iter()
        .map(|e| {
            let l = e.location().unwrap();
            (
                l.file.file_name().unwrap().to_str().unwrap().to_owned(),
                l.line,
                l.col,
            )
        })
        .collect();
    let at: Vec<_> = at.iter().map(|(f, l, c)| (f.as_str(), *l, *c)).collect();
    assert_eq!(
        at,
        [
            ("d.ron", 3, 14),
            ("e.ron", 1, 17),
            ("m.tasks.ron", 3, 3),
            ("m.tasks.ron", 4, 3)
        ]
    );
    assert!(matches!(&errs[0], FactoryError::BadDuration { value, .. } if value == "30 parsecs"));
    assert!(matches!(&errs[1], FactoryError::EmptyRun { .. }));
    assert!(matches!(&errs[2], FactoryError::BadName { name, .. } if name == "a//b"));
    assert!(matches!(&errs[3], FactoryError::DuplicateKey { name, .. } if name == "ok"));
}

#[test]
fn errors_inside_a_tasks_ron_entry_are_positioned_in_the_file() {
    let dir = tree(&[("m.tasks.ron", "{\n  \"a\": (run: Shell(\"x\")),\n  \"b\": (run: Shell(\"x\"),\n     retrys: 1),\n  \"c\": (tags: [])\n}")]);
    let errs = errors(dir.path());
    let at: Vec<_> = errs
        .iter()
        .map(|e| e.location().map(|l| (l.line, l.col)))
        .collect();
    assert_eq!(at, [Some((4, 6)), Some((5, 8))], "{errs:?}");
    assert!(matches!(
        &errs[1],
        FactoryError::MissingField { field: "run", .. }
    ));
    // Not a map at all: `ron` itself reports where.
    let dir = tree(&[("m.tasks.ron", "{\n  \"a\" (run: Shell(\"x\"))\n}")]);
    let errs = errors(dir.path());
    assert!(
        matches!(&errs[..], [FactoryError::Syntax { location, .. }] if location.line == 2),
        "{errs:?}"
    );
}

#[test]
fn every_broken_file_is_reported() {
    let dir = tree(&[
        ("a.ron", "(run: Shell(\"x\"), bad: 1)"),
        ("b/c.ron", "(run: Shell(\"x\")"),
        ("b/_dir.ron", "(tags: \"not a list\")"),
        ("ok.ron", TRUE),
        ("z.ron", "(run: Shll(\"x\"))"),
    ]);
    let errs = errors(dir.path());
    let files: Vec<_> = errs
        .iter()
        .map(|e| e.file().strip_prefix(dir.path()).unwrap().to_owned())
        .collect();
    assert_eq!(
        files,
        [
            Path::new("a.ron"),
            Path::new("b/_dir.ron"),
            Path::new("b/c.ron"),
            Path::new("z.ron")
        ]
    );
    let all = FactoryErrors(errs).to_string();
    assert!(
        all.starts_with("4 problems in the task definitions\n  - "),
        "{all}"
    );
}

#[test]
fn the_example_trees_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("factories");
    let demo = load(&root.join("demo")).unwrap();
    assert_eq!(
        names(&demo),
        [
            "api/orders",
            "api/users",
            "flaky",
            "net/port-a",
            "net/port-b",
            "setup/db",
            "skipped",
            "slow",
            "smoke/boot.sh",
            "suite"
        ]
    );
    let users = &demo.tasks[1];
    assert_eq!(*users.meta.requires, ["db-ready"]);
    assert_eq!(users.meta.more.tags, ["demo", "api"]);
    assert_eq!(users.meta.more.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        command(users).program.as_deref(),
        Some(demo.root.join(".helpers/check-env.sh").as_path())
    );

    let build = load(&root.join("build")).unwrap();
    assert_eq!(
        names(&build),
        ["compile/a", "compile/b", "compile/main", "link", "test"]
    );

    let errs = errors(&root.join("broken"));
    assert_eq!(errs.len(), 6, "{}", FactoryErrors(errs));
}

#[test]
fn slurm_args_are_inherited_and_appended() {
    let dir = tree(&[
        ("_dir.ron", r#"(slurm_args: ["--partition=a"])"#),
        ("sub/_dir.ron", r#"(slurm_args: ["--account=b"])"#),
        (
            "sub/own.ron",
            r#"(run: Cmd(["true"]), slurm_args: ["--qos=c"])"#,
        ),
        ("sub/plain.ron", r#"(run: Cmd(["true"]))"#),
        (
            "sub/many.tasks.ron",
            r#"{"x": (run: Shell("true"), priority: Some(1))}"#,
        ),
        ("top.ron", r#"(run: Cmd(["true"]))"#),
        ("run.sh", "#!/bin/sh\n"),
    ]);
    executable(&dir.path().join("run.sh"));
    let t = load(dir.path()).unwrap();
    let args = |name: &str| {
        let task = t.tasks.iter().find(|t| t.name.as_str() == name).unwrap();
        command(task).slurm_args.clone()
    };
    assert_eq!(args("sub/own"), ["--partition=a", "--account=b", "--qos=c"]);
    assert_eq!(args("sub/plain"), ["--partition=a", "--account=b"]);
    // Through `ron` (not the fast path), without the field.
    assert_eq!(args("sub/many/x"), ["--partition=a", "--account=b"]);
    assert_eq!(args("top"), ["--partition=a"]);
    assert_eq!(args("run.sh"), ["--partition=a"]);
}

//! Fingerprint tests: what changes a fingerprint, and what does not.

use std::fs;
use std::time::Duration;

use super::*;
use crate::task::{CommandSpec, Run};

/// A command task in `dir` running `./run.sh`, reading `*.txt`, requiring `lib`.
fn tree(dir: &Path) -> Vec<Task> {
    let mut spec = CommandSpec::new(Run::Cmd(vec!["./run.sh".into()]));
    spec.cwd = Some(dir.to_path_buf());
    spec.program = Some("run.sh".into());
    let mut app = Task::command("app", spec).requires(["lib"]);
    app.meta.more.inputs = ["*.txt".into(), "config.toml".into()].into();
    vec![
        Task::closure("lib", |_| Ok(())).provides(["lib"]),
        app,
        Task::closure("unrelated", |_| Ok(())),
    ]
}

fn setup() -> (tempfile::TempDir, Vec<Fingerprint>) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("run.sh"), "#!/bin/sh\necho 1\n").unwrap();
    fs::write(dir.path().join("a.txt"), "a").unwrap();
    let fps = fingerprints(&tree(dir.path()));
    (dir, fps)
}

#[test]
fn stable_when_nothing_changes() {
    let (dir, fps) = setup();
    assert_eq!(fingerprints(&tree(dir.path())), fps);
    // Metadata that does not change what a command computes does not count.
    let mut tasks = tree(dir.path());
    tasks[1].meta.priority = 5;
    tasks[1].meta.more.tags.push("slow".into());
    assert_eq!(fingerprints(&tasks), fps);
}

#[test]
fn program_content_changes_only_the_program_component() {
    let (dir, fps) = setup();
    fs::write(dir.path().join("run.sh"), "#!/bin/sh\necho 2\n").unwrap();
    let new = fingerprints(&tree(dir.path()));
    assert_ne!(new[1].program, fps[1].program);
    assert_eq!(
        (new[1].definition, new[1].inputs),
        (fps[1].definition, fps[1].inputs)
    );
    assert_eq!((new[0], new[2]), (fps[0], fps[2]));
}

#[test]
fn inputs_change_with_content_new_files_and_missing_files() {
    let (dir, fps) = setup();
    fs::write(dir.path().join("a.txt"), "A").unwrap();
    let changed = fingerprints(&tree(dir.path()));
    assert_ne!(changed[1].inputs, fps[1].inputs);
    assert_eq!(changed[1].program, fps[1].program);
    fs::write(dir.path().join("b.txt"), "b").unwrap();
    let added = fingerprints(&tree(dir.path()));
    assert_ne!(added[1].inputs, changed[1].inputs);
    fs::write(dir.path().join("config.toml"), "").unwrap();
    let appeared = fingerprints(&tree(dir.path()));
    assert_ne!(appeared[1].inputs, added[1].inputs);
}

#[test]
fn provider_changes_propagate_to_dependents_only() {
    let (dir, fps) = setup();
    let mut tasks = tree(dir.path());
    tasks[0].meta.more.timeout = Some(Duration::from_secs(3));
    let new = fingerprints(&tasks);
    assert_ne!(new[0].definition, fps[0].definition);
    assert_ne!(new[1].providers, fps[1].providers);
    assert_eq!(new[1].definition, fps[1].definition);
    assert_eq!(new[2], fps[2]);
}

#[test]
fn definition_covers_argv_env_cwd_and_timeout() {
    let (dir, fps) = setup();
    let edits: [fn(&mut CommandSpec, &mut Task); 4] = [
        |s, _| s.run = Run::Cmd(vec!["./run.sh".into(), "-v".into()]),
        |s, _| {
            s.env.insert("X".into(), "1".into());
        },
        |s, _| s.cwd = Some(s.cwd.as_ref().unwrap().join(".")),
        |_, t| t.meta.more.timeout = Some(Duration::from_secs(1)),
    ];
    for edit in edits {
        let mut tasks = tree(dir.path());
        let Work::Command(spec) = &tasks[1].work else {
            unreachable!()
        };
        let mut spec = (**spec).clone();
        edit(&mut spec, &mut tasks[1]);
        tasks[1].work = Work::Command(std::sync::Arc::new(spec));
        assert_ne!(fingerprints(&tasks)[1].definition, fps[1].definition);
    }
}

#[test]
fn long_chains_do_not_overflow_the_stack() {
    let n = 20_000;
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            Task::closure(format!("t{i}"), |_| Ok(()))
                .provides([format!("k{i}")])
                .requires(if i == 0 {
                    vec![]
                } else {
                    vec![format!("k{}", i - 1)]
                })
        })
        .collect();
    // Reverse order so that the first task visited has the whole chain below it.
    let tasks: Vec<Task> = tasks.into_iter().rev().collect();
    let fps = fingerprints(&tasks);
    assert_eq!(fps.len(), n);
    assert_ne!(fps[0].providers, fps[1].providers);
}

#[test]
fn digests_round_trip_as_hex() {
    let (_, fps) = setup();
    let text = serde_json::to_string(&fps[1]).unwrap();
    assert!(text.contains(&fps[1].program.to_string()));
    assert_eq!(serde_json::from_str::<Fingerprint>(&text).unwrap(), fps[1]);
    assert!(serde_json::from_str::<Digest>("\"zz\"").is_err());
}

#[test]
fn a_version_changes_the_definition_and_none_keeps_old_fingerprints() {
    let (dir, fps) = setup();
    for i in [0, 1] {
        let mut tasks = tree(dir.path());
        tasks[i].meta.more.version = Some("-O3".into());
        let versioned = fingerprints(&tasks);
        assert_ne!(versioned[i].definition, fps[i].definition, "task {i}");
        tasks[i].meta.more.version = Some("-O2".into());
        assert_ne!(fingerprints(&tasks)[i].definition, versioned[i].definition);
    }
    // Unset is what every fingerprint recorded before versions existed was computed without.
    let tasks = tree(dir.path());
    assert!(tasks.iter().all(|t| t.meta.more.version.is_none()));
    assert_eq!(fingerprints(&tasks), fps);
}

#[test]
fn a_tree_moved_elsewhere_keeps_its_fingerprints_when_its_root_is_given() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for dir in [a.path(), b.path()] {
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::write(dir.join("sub/x.txt"), "1").unwrap();
    }
    let task = |root: &Path| {
        let mut spec = CommandSpec::new(Run::Cmd(vec![root
            .join("sub/run.sh")
            .to_string_lossy()
            .into_owned()]));
        spec.cwd = Some(root.join("sub"));
        spec.program = Some(root.join("sub/run.sh"));
        let mut t = Task::command("t", spec);
        t.meta.more.inputs = ["*.txt".into()].into();
        vec![t]
    };
    let (ta, tb) = (task(a.path()), task(b.path()));
    // Absolute paths count without a root (embedders' tasks), not with one.
    assert_ne!(fingerprints(&ta), fingerprints(&tb));
    assert_eq!(
        fingerprints_in(&ta, Some(a.path())),
        fingerprints_in(&tb, Some(b.path()))
    );
    // What is outside the tree still counts as it is.
    fs::write(b.path().join("sub/x.txt"), "2").unwrap();
    assert_ne!(
        fingerprints_in(&ta, Some(a.path())),
        fingerprints_in(&tb, Some(b.path()))
    );
}

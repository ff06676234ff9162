//! What pexen says when something is wrong: located graph problems, field-level type errors,
//! OS reasons, next steps, preflight warnings, and what `.gitignore` excludes.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{pexen, Tree};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_locates_graph_problems_even_beside_definition_errors() {
    let t = Tree::new()
        .script("x", "true")
        .file("x.ron", r#"(run: Shell("true"))"#)
        .file(
            "sub/a.ron",
            "(\n  run: Shell(\"true\"),\n  requires: [\"db\"], claims: [\"r\"], uses: [\"r\"],\n)",
        )
        .file("bad.ron", "(run: Shell(\"true\"),\n retries: -1)")
        .file("typo.ron", r#"(run: Shell("true"), priorty: 1)"#);
    let out = t.cmd("check", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let root = t.path().display().to_string();
    for needle in [
        "5 problems: 2 in the task definitions, 3 in the graph of the tasks that loaded".to_string(),
        format!(
            "{root}/bad.ron:2:11: `retries` takes a whole number of extra attempts, 0 or more, found `-1`"
        ),
        format!("{root}/typo.ron:1:22: unknown field `priorty` (did you mean `priority`?)"),
        format!("{root}/sub/a.ron:1:1: task `sub/a` both claims and uses resource `r`"),
        format!("{root}/sub/a.ron:1:1: task `sub/a` requires token `db`, which no task provides"),
        format!(
            "{root}/x:1:1: task name `x` is defined more than once (also at {root}/x.ron:1:1)"
        ),
    ] {
        assert!(err.contains(&needle), "{needle}\n---\n{err}");
    }
}

#[test]
fn os_errors_carry_their_reason_and_a_damaged_journal_the_next_step() {
    let t = Tree::new()
        .file("a.ron", r#"(run: Shell("true"))"#)
        .file("state-file", "not a directory");
    let out = t.cmd(
        "run",
        &["--state", t.path().join("state-file").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("state-file") && err.contains("os error"),
        "{err}"
    );

    let state = t.path().join("st");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("journal"), "garbage, not a journal").unwrap();
    let out = t.cmd("run", &["--state", state.to_str().unwrap(), "--resume"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("run without --resume to start afresh, or remove")
            && err.contains(state.to_str().unwrap()),
        "{err}"
    );
    // And that advice works.
    let out = t.cmd("run", &["--state", state.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn preflight_warns_of_unmatched_inputs_and_missing_programs_and_directories() {
    let t = Tree::new()
        .file("data/one.txt", "1")
        .file(
            "in.ron",
            r#"(run: Shell("true"), inputs: ["data/*.txt", "dta/*.txt"])"#,
        )
        .file("prog.ron", r#"(run: Cmd(["./not-built"]))"#)
        .file(
            "built.ron",
            r#"(run: Cmd(["./made-by-build"]), requires: ["build"])"#,
        )
        .file(
            "build.ron",
            r#"(run: Shell("printf '#!/bin/sh\n' > made-by-build; chmod +x made-by-build"), provides: ["build"])"#,
        )
        .file("cwd.ron", r#"(run: Shell("true"), cwd: "nowhere")"#);
    let out = t.cmd("check", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: task `in`: `inputs` pattern `dta/*.txt` matches no file"),
        "{err}"
    );
    assert!(!err.contains("`data/*.txt`"), "{err}");
    assert!(
        err.contains("warning: task `prog`: program ./not-built does not exist"),
        "{err}"
    );
    assert!(
        !err.contains("made-by-build"),
        "a provider may build it: {err}"
    );
    assert!(
        err.contains("warning: task `cwd`: working directory") && err.contains("nowhere"),
        "{err}"
    );
    // The same warnings before a run.
    let r = t.run(&[]);
    assert!(
        r.stderr.contains("`dta/*.txt` matches no file"),
        "{}",
        r.stderr
    );
    assert_eq!(r.outcome("built"), "pass");
}

#[test]
fn a_zero_timeout_is_rejected() {
    let t = Tree::new().file("a.ron", "(run: Shell(\"true\"),\n timeout: \"0s\")");
    let out = t.cmd("check", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("a.ron:2:11: `timeout: \"0s\"` would end every attempt at once"),
        "{err}"
    );
    let t = Tree::new().file("a.ron", r#"(run: Shell("true"))"#);
    let out = t.cmd("run", &["--timeout", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("would end every attempt at once"));
}

#[test]
fn a_bad_shebang_says_bad_interpreter() {
    let t = Tree::new().file("t.sh", "#!/no/such/interpreter\ntrue\n");
    std::fs::set_permissions(
        t.path().join("t.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let r = t.run(&[]);
    assert_eq!(r.outcome("t.sh"), "error");
    let message = r.finished("t.sh")["message"].as_str().unwrap().to_string();
    assert!(
        message.ends_with("bad interpreter `/no/such/interpreter`: no such file"),
        "{message}"
    );
}

#[test]
fn what_gitignore_excludes_is_not_a_task() {
    let t = Tree::new()
        .script("target/debug/build-product", "true")
        .script("target/keep/kept", "true")
        .script("src/t.sh", "true")
        .file(".gitignore", "/target/*\n!/target/keep\n");
    let out = t.cmd("list", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["src/t.sh", "target/keep/kept"]
    );
    assert!(stderr(&out).contains("note: 1 entry excluded by .gitignore"));
    let out = t.cmd("check", &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(1 entry excluded by .gitignore)"));
    let out = pexen()
        .args(["run", "--message-format", "json"])
        .arg(t.path())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("build-product"));
}

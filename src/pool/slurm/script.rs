//! What pexen hands to `sbatch` for one attempt: the arguments (resources from `slots`, the
//! time limit from `timeout`, the user's `--slurm-arg`s and the task's `slurm_args`) and the
//! batch script, which runs the task's command in its working directory with its environment and
//! leaves results, exports, output and the exit status in files named after the job id.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::context::Shared;
use crate::task::{CommandSpec, TaskName};

/// The files of job `ID` in the jobs directory: `ID.results`, `ID.export`, `ID.stdout`,
/// `ID.stderr`, `ID.exit` (written last, by a rename) and `ID.out` (Slurm's own output).
pub(crate) const SUFFIXES: [&str; 6] = ["results", "export", "stdout", "stderr", "exit", "out"];

/// The arguments of `sbatch` for one attempt, before the script's path. Later arguments win in
/// `sbatch`, so the task's own `slurm_args` override the run's, which override the mapping.
pub(crate) fn sbatch_args(
    task: &TaskName,
    slots: &BTreeMap<String, u32>,
    timeout: Option<Duration>,
    grace: Duration,
    jobs_dir: &Path,
    run_args: &[String],
    task_args: &[String],
) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_owned(),
        format!("--job-name=pexen:{task}"),
        // pexen requeues lost jobs itself (at most twice) and must see each loss.
        "--no-requeue".to_owned(),
        format!("--chdir={}", jobs_dir.display()),
        format!("--output={}", jobs_dir.join("%j.out").display()),
    ];
    args.extend(resource_args(slots));
    if let Some(timeout) = timeout {
        args.push(format!("--time={}", minutes(timeout + grace)));
    }
    args.extend(run_args.iter().cloned());
    args.extend(task_args.iter().cloned());
    args
}

/// `slots` as Slurm resources: `cpus` -> `--cpus-per-task`, `mem_mb` / `mem_gb` -> `--mem`
/// (summed), `gpu` -> `--gres=gpu:N`. Other slots are pexen's own counters only.
pub(crate) fn resource_args(slots: &BTreeMap<String, u32>) -> Vec<String> {
    let mut args = Vec::new();
    let get = |name: &str| slots.get(name).copied().unwrap_or(0);
    if get("cpus") > 0 {
        args.push(format!("--cpus-per-task={}", get("cpus")));
    }
    let mem_mb = u64::from(get("mem_mb")) + u64::from(get("mem_gb")) * 1024;
    if mem_mb > 0 {
        args.push(format!("--mem={mem_mb}M"));
    }
    if get("gpu") > 0 {
        args.push(format!("--gres=gpu:{}", get("gpu")));
    }
    args
}

/// Whole minutes, rounded up, at least one (`--time` is minute-granular).
fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

/// One attempt's batch script.
pub(crate) struct ScriptJob<'a> {
    pub task: &'a TaskName,
    pub attempt: u32,
    pub spec: &'a CommandSpec,
    pub shared: &'a Shared,
    pub jobs_dir: &'a Path,
    /// Where the command runs: the task's `cwd`, else pexen's working directory.
    pub cwd: Option<&'a Path>,
    /// `PEXEN_CHECKPOINT`, when the run keeps checkpoints.
    pub checkpoint: Option<&'a Path>,
}

/// The batch script: `cd` to the task's directory, run the command through `env` (so every
/// variable name works, and a program that cannot start is told apart by `env`'s message) with
/// stdin from `/dev/null` and the output to files, then write the exit status to `ID.exit.tmp`
/// and rename it to `ID.exit`: a reader never sees half a number.
pub(crate) fn batch_script(job: &ScriptJob<'_>) -> String {
    let mut s = String::from("#!/bin/sh\n");
    let _ = writeln!(
        s,
        "# pexen: task {}, attempt {}",
        one_line(job.task.as_str()),
        job.attempt
    );
    let _ = writeln!(
        s,
        "j={}/\"$SLURM_JOB_ID\"",
        quote(&job.jobs_dir.to_string_lossy())
    );
    if let Some(cwd) = job.cwd {
        let cwd = quote(&cwd.to_string_lossy());
        let _ = writeln!(
            s,
            "cd {cwd} 2>/dev/null || {{ echo \"env: cannot enter the working directory \"{cwd} >\"$j.stderr\"; echo 127 >\"$j.exit.tmp\"; mv \"$j.exit.tmp\" \"$j.exit\"; exit 0; }}"
        );
    }
    s.push_str("env");
    let mut assign = |key: &str, value: &str| {
        let _ = write!(s, " \\\n  {}", quote(&format!("{key}={value}")));
    };
    assign("PEXEN_TASK", job.task.as_str());
    assign("PEXEN_ATTEMPT", &job.attempt.to_string());
    if let Some(dir) = job.checkpoint {
        assign("PEXEN_CHECKPOINT", &dir.to_string_lossy());
    }
    for (key, value) in job.shared {
        match value {
            serde_json::Value::String(v) => assign(key, v),
            other => assign(key, &other.to_string()),
        }
    }
    for (key, value) in &job.spec.env {
        assign(key, value);
    }
    // Paths of this job's files: expanded by the shell, after the fixed assignments so that a
    // task's env cannot redirect them.
    s.push_str(" \\\n  PEXEN_RESULTS=\"$j.results\" PEXEN_EXPORT=\"$j.export\"");
    for arg in job.spec.argv() {
        let _ = write!(s, " \\\n  {}", quote(&arg));
    }
    s.push_str(" \\\n  </dev/null >\"$j.stdout\" 2>\"$j.stderr\"\n");
    s.push_str("echo $? >\"$j.exit.tmp\" && mv \"$j.exit.tmp\" \"$j.exit\"\n");
    s
}

/// `s` quoted for `sh` (single quotes; a quote inside becomes `'\''`).
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Run;
    use std::process::Command;

    #[test]
    fn slots_map_to_slurm_resources() {
        let slots: BTreeMap<String, u32> = [
            ("cpus", 4),
            ("mem_gb", 2),
            ("mem_mb", 512),
            ("gpu", 1),
            ("db", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(
            resource_args(&slots),
            ["--cpus-per-task=4", "--mem=2560M", "--gres=gpu:1"]
        );
        assert!(resource_args(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn the_time_limit_is_whole_minutes_grace_included() {
        let args = |t: u64| {
            sbatch_args(
                &TaskName::new("a/b"),
                &BTreeMap::new(),
                Some(Duration::from_secs(t)),
                Duration::from_secs(5),
                Path::new("/s/jobs"),
                &["--partition=p".into()],
                &["--partition=q".into()],
            )
        };
        let a = args(30);
        assert!(a.contains(&"--time=1".to_owned()), "{a:?}");
        assert!(args(56).contains(&"--time=2".to_owned()));
        assert!(a.contains(&"--job-name=pexen:a/b".to_owned()));
        assert!(a.contains(&"--output=/s/jobs/%j.out".to_owned()));
        // The task's own arguments come last, so they win.
        assert_eq!(&a[a.len() - 2..], ["--partition=p", "--partition=q"]);
    }

    #[test]
    fn quoting_survives_the_shell() {
        for s in ["plain", "it's", "a b", "$HOME", "`x`", "\\n", ""] {
            let out = Command::new("/bin/sh")
                .args(["-c", &format!("printf %s {}", quote(s))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }

    #[test]
    fn the_script_runs_the_command_with_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work dir");
        std::fs::create_dir(&work).unwrap();
        let mut spec = CommandSpec::new(Run::Shell(
            "echo \"$PEXEN_TASK $PEXEN_ATTEMPT $K $SHARED\"; pwd; echo pass ok >>\"$PEXEN_RESULTS\"; echo err >&2; exit 3".into(),
        ));
        spec.env.insert("K".into(), "it's v".into());
        spec.cwd = Some(work.clone());
        let mut shared = Shared::new();
        shared.insert("SHARED".into(), serde_json::Value::String("s".into()));
        let script = batch_script(&ScriptJob {
            task: &TaskName::new("t"),
            attempt: 2,
            spec: &spec,
            shared: &shared,
            jobs_dir: dir.path(),
            cwd: spec.cwd.as_deref(),
            checkpoint: None,
        });
        let status = Command::new("/bin/sh")
            .args(["-c", &script])
            .env("SLURM_JOB_ID", "42")
            .status()
            .unwrap();
        assert!(status.success());
        let read = |suffix: &str| {
            std::fs::read_to_string(dir.path().join(format!("42.{suffix}"))).unwrap()
        };
        assert_eq!(read("exit"), "3\n");
        assert_eq!(
            read("stdout"),
            format!("t 2 it's v s\n{}\n", work.display())
        );
        assert_eq!(read("stderr"), "err\n");
        assert_eq!(read("results"), "pass ok\n");
        assert!(!dir.path().join("42.exit.tmp").exists());
    }

    #[test]
    fn a_missing_working_directory_is_a_start_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = CommandSpec::new(Run::Cmd(vec!["true".into()]));
        spec.cwd = Some(dir.path().join("nope"));
        let script = batch_script(&ScriptJob {
            task: &TaskName::new("t"),
            attempt: 1,
            spec: &spec,
            shared: &Shared::new(),
            jobs_dir: dir.path(),
            cwd: spec.cwd.as_deref(),
            checkpoint: None,
        });
        Command::new("/bin/sh")
            .args(["-c", &script])
            .env("SLURM_JOB_ID", "9")
            .status()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("9.exit")).unwrap(),
            "127\n"
        );
        let err = std::fs::read_to_string(dir.path().join("9.stderr")).unwrap();
        assert!(
            err.starts_with("env: cannot enter the working directory"),
            "{err}"
        );
    }
}

//! `--message-format json`: one JSON object per line for each event (SPEC section 5); and the
//! task list of `pexen list --format json`.
//!
//! The five lines of the SPEC are reproduced field for field and in the same key order. Three more
//! kinds carry the remaining events:
//!
//! ```json
//! {"type":"warning","task":null,"message":"token `x` is provided but never required"}
//! {"type":"task-retry","task":"net/flaky","attempt":1,"outcome":"fail","message":"exit code 1","duration_s":0.5}
//! {"type":"task-submitted","task":"net/big","attempt":1,"job":"4242"}
//! ```
//!
//! SPEC 13 adds `{"type":"group-started","group":"vm"}` and `{"type":"group-finished","group":"vm"}`
//! around each turn of an exclusivity group.
//!
//! `task-submitted` says that the attempt became the Slurm job `job` (`pexen run --slurm`).
//! `task-retry` says that attempt `attempt` ended with `outcome` and another attempt follows.
//! `task-suspended` (`{"type":"task-suspended","task":"boot/reboot","attempt":1,"message":"exit
//! code 75"}`) says that the task stopped the run to continue it later (SPEC section 12); its
//! `task-finished` (a `skip` whose cause says so) follows.
//! Durations are seconds, rounded to the millisecond.
//!
//! `task-finished` has one more key after the SPEC's: `message`, why the deciding attempt ended
//! so (`exit code 3`, `killed by SIGSEGV`, `timed out after 500ms`, `cannot start ...`), as the
//! human display and JUnit show it; `null` for a plain pass. With [`JsonOptions::output`]
//! (`--json-output`), `task-finished` and `task-retry` also carry `output`, the captured
//! `{"stdout":..,"stderr":..}` of a failed attempt (`null` otherwise).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::sched::events::{Counts, Event, Output};
use crate::task::{Outcome, Run, Task, TaskName, Work};

/// Field order here is the key order on the line (serde writes struct fields in order).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Line<'a> {
    RunStarted {
        tasks: usize,
        jobs: usize,
    },
    Warning {
        task: Option<&'a TaskName>,
        message: &'a str,
    },
    TaskStarted {
        task: &'a TaskName,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
    },
    TaskSubmitted {
        task: &'a TaskName,
        attempt: u32,
        job: &'a str,
    },
    TaskResult {
        task: &'a TaskName,
        status: Outcome,
        message: &'a str,
    },
    TaskRetry {
        task: &'a TaskName,
        attempt: u32,
        outcome: Outcome,
        message: Option<&'a str>,
        duration_s: f64,
        #[serde(skip_serializing_if = "Omit::is_omitted")]
        output: Omit<Option<&'a Output>>,
    },
    TaskSuspended {
        task: &'a TaskName,
        attempt: u32,
        message: Option<&'a str>,
    },
    TaskFinished {
        task: &'a TaskName,
        outcome: Outcome,
        attempt: u32,
        exit_code: Option<i32>,
        duration_s: f64,
        resumed: bool,
        cause: Option<&'a str>,
        message: Option<&'a str>,
        #[serde(skip_serializing_if = "Omit::is_omitted")]
        output: Omit<Option<&'a Output>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<&'a str>,
    },
    HostConnected {
        host: &'a str,
        uploaded: bool,
        files_sent: usize,
    },
    HostLost {
        host: &'a str,
        reason: &'a str,
    },
    HostReleased {
        host: &'a str,
        reason: &'a str,
    },
    GroupStarted {
        group: &'a str,
    },
    GroupFinished {
        group: &'a str,
    },
    RunFinished {
        outcome: Outcome,
        counts: &'a Counts,
        duration_s: f64,
    },
}

/// A key written only on request.
#[derive(Serialize)]
#[serde(transparent)]
struct Omit<T>(Option<T>);

impl<T> Omit<T> {
    fn is_omitted(&self) -> bool {
        self.0.is_none()
    }
}

/// What the JSON lines carry beyond the SPEC's keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonOptions {
    /// Add `output` (captured stdout and stderr of failed attempts) to `task-finished` and
    /// `task-retry`.
    pub output: bool,
}

fn with_output(
    options: JsonOptions,
    output: Option<&Output>,
    failed: bool,
) -> Omit<Option<&Output>> {
    Omit(options.output.then(|| output.filter(|_| failed)))
}

/// Seconds rounded to milliseconds, so `210ms` prints as `0.21` rather than `0.210000001`.
fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The JSON line for an event, without the trailing newline. Every event has one today; the
/// `Option` leaves room for events that stay internal.
pub fn event_json(e: &Event) -> Option<String> {
    event_json_with(e, JsonOptions::default())
}

/// [`event_json`] with options.
pub fn event_json_with(e: &Event, options: JsonOptions) -> Option<String> {
    let line = match e {
        Event::RunStarted { tasks, jobs } => Line::RunStarted {
            tasks: *tasks,
            jobs: *jobs,
        },
        Event::Warning { task, message } => Line::Warning {
            task: task.as_ref(),
            message,
        },
        Event::TaskStarted {
            task,
            attempt,
            host,
        } => Line::TaskStarted {
            task,
            attempt: *attempt,
            host: host.as_deref(),
        },
        Event::TaskSubmitted { task, attempt, job } => Line::TaskSubmitted {
            task,
            attempt: *attempt,
            job,
        },
        Event::HostConnected {
            host,
            uploaded,
            files_sent,
        } => Line::HostConnected {
            host,
            uploaded: *uploaded,
            files_sent: *files_sent,
        },
        Event::HostLost { host, reason } => Line::HostLost { host, reason },
        Event::HostReleased { host, reason } => Line::HostReleased { host, reason },
        Event::TaskResult {
            task,
            status,
            message,
            ..
        } => Line::TaskResult {
            task,
            status: *status,
            message,
        },
        Event::TaskRetrying {
            task,
            attempt,
            outcome,
            message,
            duration,
            output,
        } => Line::TaskRetry {
            task,
            attempt: *attempt,
            outcome: *outcome,
            message: message.as_deref(),
            duration_s: seconds(*duration),
            output: with_output(options, output.as_deref(), true),
        },
        Event::TaskSuspended {
            task,
            attempt,
            message,
        } => Line::TaskSuspended {
            task,
            attempt: *attempt,
            message: message.as_deref(),
        },
        Event::TaskFinished(f) => Line::TaskFinished {
            task: &f.task,
            outcome: f.outcome,
            attempt: f.attempt,
            exit_code: f.exit_code,
            duration_s: seconds(f.duration),
            resumed: f.resumed,
            cause: f.cause.as_deref(),
            host: f.host.as_deref(),
            message: f.message.as_deref(),
            output: with_output(options, f.output.as_deref(), !f.outcome.is_success()),
        },
        Event::GroupStarted { group } => Line::GroupStarted { group },
        Event::GroupFinished { group } => Line::GroupFinished { group },
        Event::RunFinished {
            outcome,
            counts,
            duration,
            ..
        } => Line::RunFinished {
            outcome: *outcome,
            counts,
            duration_s: seconds(*duration),
        },
    };
    // Serializing these plain structs cannot fail; `ok()` keeps the signature panic-free.
    serde_json::to_string(&line).ok()
}

fn run_json(t: &Task) -> serde_json::Value {
    match &t.work {
        Work::Command(c) => match &c.run {
            Run::Cmd(argv) => json!({"cmd": argv}),
            Run::Shell(s) => json!({"shell": s}),
        },
        Work::Closure(_) => json!("closure"),
    }
}

/// `chosen`: the virtual tokens this task is the chosen provider of.
/// One task of `pexen list --format json` (and of `GET /api/v1/tasks`); `chosen`: the
/// virtual tokens it is the default provider of.
pub fn task_json(t: &Task, chosen: &[String]) -> serde_json::Value {
    let m = &t.meta;
    let (env, cwd) = match &t.work {
        Work::Command(c) => (json!(c.env), json!(c.cwd)),
        Work::Closure(_) => (json!({}), serde_json::Value::Null),
    };
    json!({
        "name": t.name.as_str(),
        "run": run_json(t),
        "requires": m.requires,
        "provides": m.provides,
        "claims": m.claims,
        "uses": m.uses,
        "slots": m.more.slots,
        "priority": m.priority,
        "timeout_s": m.more.timeout.map(|d| d.as_secs_f64()),
        "retries": m.more.retries,
        "on_failure": format!("{:?}", m.more.on_failure),
        "tags": m.more.tags,
        "inputs": m.more.inputs,
        "env": env,
        "cwd": cwd,
        "group": m.more.group,
        "when": m.more.when.iter().map(|c| json!({
            "os": c.os,
            "arch": c.arch,
            "env": c.env,
            "exists": c.exists,
            "command": c.command,
        })).collect::<Vec<_>>(),
        "chosen_for": chosen,
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::sched::events::Finished;

    fn json(e: &Event) -> String {
        event_json(e).unwrap()
    }

    #[test]
    fn lines_match_the_spec_examples() {
        let task = TaskName::new("net/tcp/connect");
        assert_eq!(
            json(&Event::RunStarted { tasks: 12, jobs: 2 }),
            r#"{"type":"run-started","tasks":12,"jobs":2}"#
        );
        assert_eq!(
            json(&Event::TaskStarted {
                task: task.clone(),
                attempt: 1,
                host: None,
            }),
            r#"{"type":"task-started","task":"net/tcp/connect","attempt":1}"#
        );
        assert_eq!(
            json(&Event::TaskResult {
                task: task.clone(),
                attempt: 1,
                status: Outcome::Warn,
                message: "slow handshake".into()
            }),
            r#"{"type":"task-result","task":"net/tcp/connect","status":"warn","message":"slow handshake"}"#
        );
        let finished = Finished {
            task,
            outcome: Outcome::Warn,
            attempt: 1,
            exit_code: Some(0),
            duration: Duration::from_millis(210),
            resumed: false,
            cause: None,
            message: None,
            exports: None,
            output: None,
            host: None,
        };
        assert_eq!(
            json(&Event::TaskFinished(finished)),
            r#"{"type":"task-finished","task":"net/tcp/connect","outcome":"warn","attempt":1,"exit_code":0,"duration_s":0.21,"resumed":false,"cause":null,"message":null}"#
        );
        let counts = Counts {
            pass: 9,
            warn: 1,
            fail: 1,
            skip: 1,
            ..Counts::default()
        };
        assert_eq!(
            json(&Event::RunFinished {
                outcome: Outcome::Fail,
                counts,
                duration: Duration::from_millis(1700),
                interrupted: false
            }),
            r#"{"type":"run-finished","outcome":"fail","counts":{"pass":9,"warn":1,"fail":1,"error":0,"timeout":0,"skip":1},"duration_s":1.7}"#
        );
    }

    #[test]
    fn group_turns_are_bracketed() {
        assert_eq!(
            json(&Event::GroupStarted { group: "vm".into() }),
            r#"{"type":"group-started","group":"vm"}"#
        );
        assert_eq!(
            json(&Event::GroupFinished { group: "vm".into() }),
            r#"{"type":"group-finished","group":"vm"}"#
        );
    }

    #[test]
    fn extra_kinds_for_warnings_and_retries() {
        assert_eq!(
            json(&Event::Warning {
                task: None,
                message: "token `x` is never required".into()
            }),
            r#"{"type":"warning","task":null,"message":"token `x` is never required"}"#
        );
        assert_eq!(
            json(&Event::TaskRetrying {
                task: "net/flaky".into(),
                attempt: 1,
                outcome: Outcome::Fail,
                message: Some("exit code 1".into()),
                output: None,
                duration: Duration::from_millis(500),
            }),
            r#"{"type":"task-retry","task":"net/flaky","attempt":1,"outcome":"fail","message":"exit code 1","duration_s":0.5}"#
        );
        assert_eq!(
            json(&Event::TaskSuspended {
                task: "boot/reboot".into(),
                attempt: 2,
                message: Some("exit code 75".into()),
            }),
            r#"{"type":"task-suspended","task":"boot/reboot","attempt":2,"message":"exit code 75"}"#
        );
    }

    #[test]
    fn task_finished_carries_the_message_and_on_request_the_output() {
        let f = Finished {
            task: "t".into(),
            outcome: Outcome::Timeout,
            attempt: 1,
            exit_code: None,
            duration: Duration::from_millis(500),
            resumed: false,
            cause: None,
            message: Some("timed out after 500ms".into()),
            exports: None,
            output: Some(std::sync::Arc::new(Output {
                stdout: "out\n".into(),
                stderr: String::new(),
            })),
            host: None,
        };
        let e = Event::TaskFinished(f);
        assert_eq!(
            json(&e),
            r#"{"type":"task-finished","task":"t","outcome":"timeout","attempt":1,"exit_code":null,"duration_s":0.5,"resumed":false,"cause":null,"message":"timed out after 500ms"}"#
        );
        let with = event_json_with(&e, JsonOptions { output: true }).unwrap();
        assert!(
            with.ends_with(
                r#","message":"timed out after 500ms","output":{"stdout":"out\n","stderr":""}}"#
            ),
            "{with}"
        );
    }
}

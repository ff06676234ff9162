//! The display in a real terminal emulator (tmux), read back as a person sees it: the screen
//! while tasks run, and the scrollback after the run. Needs tmux: run `.ci/tmux.sh` first.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Tree;

/// A tmux server of its own (socket in a temporary directory), killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `command` in a 120x50 window.
    fn start(command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "50",
            ])
            .arg(command)
            .env_remove("NO_COLOR")
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux is not installed: run .ci/tmux.sh first");
        assert!(status.success(), "tmux new-session failed");
        let t = Self { socket, _dir: dir };
        t.tmux(&["set-option", "-g", "history-limit", "5000"]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    /// Scrollback and screen, as plain text.
    fn all(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-5000"])
    }

    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(
                !s.contains("[exit "),
                "the run ended without {what}:\n{}",
                self.all()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
#[ignore = "needs tmux: run .ci/tmux.sh first"]
fn the_live_display_shows_every_running_task_and_leaves_a_clean_scrollback() {
    let go = tempfile::tempdir().unwrap();
    let flag = go.path().join("go");
    let mut t = Tree::new()
        .file(
            "p1.ron",
            r#"(run: Shell("echo K=one >> $PEXEN_EXPORT"), provides: ["t"])"#,
        )
        .file(
            "p2.ron",
            r#"(run: Shell("echo K=two >> $PEXEN_EXPORT"), provides: ["t"])"#,
        );
    for i in 0..13 {
        t = t.file(
            &format!("w{i:02}.ron"),
            &format!(
                r#"(run: Shell("while [ ! -e {} ]; do sleep 0.01; done"), requires: ["t"])"#,
                flag.display()
            ),
        );
    }
    let command = format!(
        "{} run {} -j 13 --color never --state {}; echo \"[exit $?]\"; sleep 600",
        quote(Path::new(env!("CARGO_BIN_EXE_pexen"))),
        quote(t.path()),
        quote(&t.path().join(".p"))
    );
    let tmux = Tmux::start(&command);
    let screen = tmux.wait_for("13 running", |s| {
        s.contains("13 running") && s.contains("... and 5 more")
    });
    let lines: Vec<&str> = screen.lines().collect();
    let shown = lines
        .iter()
        .filter(|l| (0..13).any(|i| l.trim_end().ends_with(&format!(" w{i:02}"))))
        .count();
    assert_eq!(shown, 8, "{screen}");
    // The warning printed before the tasks started is still on the screen, above the bars.
    assert!(
        screen.contains("warning: w00: shared key `K` is exported by both `p1` and `p2`")
            || screen.contains("shared key `K`"),
        "{screen}"
    );
    std::fs::write(&flag, "").unwrap();
    tmux.wait_for("the end", |s| s.contains("[exit "));
    let all = tmux.all();
    assert!(all.contains("[exit 0]"), "{all}");
    assert!(
        all.contains("shared key `K`"),
        "the warning survived: {all}"
    );
    for i in 0..13 {
        assert!(all.contains(&format!("] w{i:02}\n")), "w{i:02}: {all}");
    }
    assert!(all.contains("15 tasks: 15 pass"), "{all}");
    // No bar, spinner or `... and N more` line was left behind in the scrollback.
    for stale in ["Running [", "running", "... and", "⠁"] {
        assert!(
            !all.contains(stale),
            "stale `{stale}` in the scrollback:\n{all}"
        );
    }
}

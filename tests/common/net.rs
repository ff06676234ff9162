//! How host tests reach hosts `h1`, `h2`, `h3`: a stand-in ssh (a script that runs the remote
//! command with `sh` under a per-host `HOME`, in a session of its own as sshd gives it:
//! bootstrap, upload, protocol, sync and the bootstrap script's sweep of the session are all
//! real, only the network is not), or the real sshds of `.ci/sshd.sh`. Included with
//! `#[path = "common/net.rs"] mod net;`.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Net {
    /// `PEXEN_SSH` for pexen.
    pub ssh: String,
    pub extra_env: Vec<(String, String)>,
    /// Where the hosts' homes are (`home1`, `home2`, `home3` under it).
    pub homes: PathBuf,
    _dir: Option<tempfile::TempDir>,
    /// Real sshd.
    pub real: bool,
}

impl Net {
    /// The stand-in: `sh` under a per-host HOME, in a new session (`setsid -w`, which waits
    /// and passes on the status) as sshd runs each session's command: a worker killed between
    /// starting a task and noting its group leaves the task to the script's sweep of the
    /// session, here as on a real host.
    pub fn fake() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-ssh");
        std::fs::write(
            &script,
            r#"#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -o|-p|-l|-e|-F|-i) shift 2;; -*) shift;; *) break;; esac; done
host=$1; shift
export HOME="$FAKE_SSH_HOMES/home${host#h}"; mkdir -p "$HOME"
exec setsid -w sh -c "$*"
"#,
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let homes = dir.path().join("homes");
        Net {
            ssh: script.to_string_lossy().into_owned(),
            extra_env: vec![(
                "FAKE_SSH_HOMES".into(),
                homes.to_string_lossy().into_owned(),
            )],
            homes,
            _dir: Some(dir),
            real: false,
        }
    }

    /// Real sshd from `.ci/sshd.sh`.
    pub fn sshd() -> Net {
        let dir = std::env::var_os("PEXEN_TEST_SSH_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-sshd"),
            PathBuf::from,
        );
        let config = dir.join("ssh_config");
        assert!(
            config.is_file(),
            "{} is missing: run .ci/sshd.sh first (as root) to start the test sshds",
            config.display()
        );
        Net {
            ssh: format!("ssh -F {}", config.display()),
            extra_env: Vec::new(),
            homes: dir,
            _dir: None,
            real: true,
        }
    }

    /// The home directory of host `h` (`h1`): for real sshd, the account's home as sshd sees
    /// it (the password database, which `.ci/sshd.sh` of any checkout may have set).
    pub fn home(&self, host: &str) -> PathBuf {
        let n = host.trim_start_matches('h');
        if self.real {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let prefix = format!("pexen-h{n}:");
            if let Some(dir) = passwd
                .lines()
                .find(|l| l.starts_with(&prefix))
                .and_then(|l| l.split(':').nth(5))
            {
                return PathBuf::from(dir);
            }
        }
        self.homes.join(format!("home{n}"))
    }

    /// Sets what pexen needs to reach the hosts on `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("PEXEN_SSH", &self.ssh);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
    }
}

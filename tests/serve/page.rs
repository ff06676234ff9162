//! The page in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/chromium.sh`). Screenshots of each step are written to
//! `target/serve-page/` for people to look at.
//!
//! Programs: `PEXEN_CHROMEDRIVER` (default `chromedriver`), `PEXEN_CHROMIUM` (default
//! `/usr/lib/chromium/chromium`, else `/usr/bin/chromium`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::Tree;
use crate::Served;

const NEEDS: &str = "needs chromium and chromedriver: run .ci/chromium.sh first";

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let program = std::env::var("PEXEN_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, with the browsers it starts: all are ended together.
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} ({e}): {NEEDS}"));
        let url = format!("http://127.0.0.1:{port}");
        // Ready once it answers its status.
        while ureq::get(&format!("{url}/status")).call().is_err() {
            std::thread::yield_now();
        }
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this test started and has not reaped.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn chromium() -> String {
    std::env::var("PEXEN_CHROMIUM").unwrap_or_else(|_| {
        ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| panic!("no chromium: {NEEDS}"))
            .to_string()
    })
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a WebDriver session ({e}): {NEEDS}"))
}

/// Waits (as long as it takes) for an element matching `css`.
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .forever()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
}

fn task_css(name: &str, state: &str) -> String {
    format!(r#"g.task[data-name="{name}"][data-state="{state}"]"#)
}

async fn screenshot(c: &Client, dir: &Path, step: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{step}.png")), png).unwrap();
}

#[test]
#[ignore = "needs chromium: run .ci/chromium.sh first"]
fn the_page_shows_and_drives_a_run() {
    let t = Tree::new();
    let gate = t.path().join(".gate");
    let t = t
        .script("ok.sh", "echo fine")
        .file(
            "bad.ron",
            r#"(run: Shell("echo 'bad <b>html</b> output'; echo oops >&2; exit 1"))"#,
        )
        .file(
            "hold.ron",
            &format!(
                r#"(run: Shell("while [ ! -e '{}' ]; do sleep 0.02; done"), provides: ["held"])"#,
                gate.display()
            ),
        )
        .file(
            "after.ron",
            r#"(run: Shell("echo after"), requires: ["held"])"#,
        );
    let shots: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("serve-page");
    std::fs::create_dir_all(&shots).unwrap();
    let s = Served::start(t.path(), &["-j", "2"]);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&driver, profile.path()).await;
        c.goto(&s.url).await.unwrap();
        wait_for(&c, "body[data-ready=true]").await;
        // The DAG: a box per task, and the arrow from `hold` to `after`.
        let boxes = c.find_all(Locator::Css("g.task")).await.unwrap();
        assert_eq!(boxes.len(), 4);
        assert_eq!(
            c.find_all(Locator::Css("path.edge")).await.unwrap().len(),
            1
        );
        let counts = c.find_all(Locator::Css("#counts .count")).await.unwrap();
        assert_eq!(counts.len(), 8);
        screenshot(&c, &shots, "1-loaded").await;

        // A run from the page: boxes go from waiting to running to pass/fail as events come.
        c.find(Locator::Id("run-all"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(&c, &task_css("hold", "running")).await;
        wait_for(&c, &task_css("ok.sh", "pass")).await;
        wait_for(&c, &task_css("bad", "fail")).await;
        // `after` needs `hold`: it waits.
        c.find(Locator::Css(&task_css("after", "waiting")))
            .await
            .unwrap();
        wait_for(
            &c,
            r#"#counts .count[data-state="running"][data-count="1"]"#,
        )
        .await;
        wait_for(&c, "#first-failure:not([hidden])").await;
        screenshot(&c, &shots, "2-running").await;
        std::fs::write(&gate, "").unwrap();
        wait_for(&c, &task_css("after", "pass")).await;
        wait_for(&c, r#"#run-status[data-run="1"][data-done="true"]"#).await;
        wait_for(&c, r#"#counts .count[data-state="pass"][data-count="3"]"#).await;
        screenshot(&c, &shots, "3-finished").await;

        // The filter box reads a filter as `--filter` does: a glob on whole components, else a
        // substring. Tasks that do not match are dimmed.
        let filter = c.find(Locator::Id("filter")).await.unwrap();
        filter.send_keys("o*").await.unwrap();
        wait_for(&c, r#"g.task.dim[data-name="hold"]"#).await;
        c.find(Locator::Css(r#"g.task:not(.dim)[data-name="ok.sh"]"#))
            .await
            .unwrap();
        assert_eq!(
            c.find_all(Locator::Css("g.task.dim")).await.unwrap().len(),
            3
        );
        filter.clear().await.unwrap();
        filter.send_keys("a").await.unwrap();
        wait_for(&c, r#"g.task:not(.dim)[data-name="bad"]"#).await;
        wait_for(&c, r#"g.task.dim[data-name="ok.sh"]"#).await;
        assert_eq!(
            c.find_all(Locator::Css("g.task.dim")).await.unwrap().len(),
            2
        );
        filter.clear().await.unwrap();
        filter.send_keys(" ").await.unwrap();
        wait_for(&c, r#"g.task:not(.dim)[data-name="ok.sh"]"#).await;
        assert!(c
            .find_all(Locator::Css("g.task.dim"))
            .await
            .unwrap()
            .is_empty());

        // A failed task's output, as text.
        c.find(Locator::Css(r#"g.task[data-name="bad"]"#))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let stdout = wait_for(&c, "#panel:not([hidden]) #panel-stdout:not(:empty)").await;
        assert_eq!(stdout.text().await.unwrap(), "bad <b>html</b> output");
        assert!(c
            .find_all(Locator::Css("#panel b"))
            .await
            .unwrap()
            .is_empty());
        let stderr = c.find(Locator::Id("panel-stderr")).await.unwrap();
        assert_eq!(stderr.text().await.unwrap(), "oops");
        screenshot(&c, &shots, "4-failed-output").await;

        // Rerun failed: only `bad` runs; the rest is taken from the journal or not selected.
        c.find(Locator::Id("run-failed"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(&c, r#"#run-status[data-run="2"][data-done="true"]"#).await;
        wait_for(&c, &task_css("bad", "fail")).await;
        screenshot(&c, &shots, "5-rerun-failed").await;
        c.close().await.unwrap();
    });
    let events = s.events("2", None);
    let started: Vec<&str> = events
        .iter()
        .filter(|(_, e)| e["type"] == "task-started")
        .map(|(_, e)| e["task"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["bad"]);
}

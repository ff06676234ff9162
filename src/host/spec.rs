//! Host specs (`local`, `ssh://[user@]host[:port][?jobs=N&tags=a,b&capacity=gpu:2&shared_fs=1]`)
//! and hosts files (a RON list of the same), SPEC section 9.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Where a host is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// This machine.
    Local,
    /// Reached with the system `ssh` client.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
    },
    /// A `pexen worker --listen` daemon, reached with mutual TLS.
    Tls { host: String, port: u16 },
    /// A pilot worker: a Slurm job running `pexen worker --connect` that connects back to
    /// this run (`pexen run --slurm --slurm-workers N`); `seat` is its place among the N.
    Pilot { seat: usize },
}

/// One host of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// Its name in events, reports and `PEXEN_HOST`: the host part of the URL, or the `name`
    /// of a hosts file entry; `local` for this machine.
    pub name: String,
    pub kind: HostKind,
    /// Attempts at once; `None`: its number of CPUs.
    pub jobs: Option<usize>,
    pub tags: Vec<String>,
    /// Capacities of counted resources declared for this host.
    pub capacity: BTreeMap<String, u32>,
    /// The tree is at the same absolute path on the host: nothing is synced.
    pub shared_fs: bool,
}

impl HostSpec {
    /// This machine, with `jobs` attempts at once.
    pub fn local(jobs: usize) -> Self {
        Self {
            name: "local".into(),
            kind: HostKind::Local,
            jobs: Some(jobs),
            tags: Vec::new(),
            capacity: BTreeMap::new(),
            shared_fs: true,
        }
    }

    /// Parses a host URL.
    ///
    /// ```
    /// use pexen::host::{HostKind, HostSpec};
    /// let h = HostSpec::parse("ssh://me@build1:2222?jobs=4&tags=linux,gpu").unwrap();
    /// assert_eq!(h.name, "build1");
    /// assert_eq!(h.jobs, Some(4));
    /// assert_eq!(h.tags, ["linux", "gpu"]);
    /// assert!(matches!(h.kind, HostKind::Ssh { port: Some(2222), .. }));
    /// ```
    pub fn parse(url: &str) -> Result<Self, SpecError> {
        let bad = |why: &str| SpecError::Bad {
            spec: url.to_string(),
            why: why.to_string(),
        };
        if url == "local" {
            return Ok(Self::local(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(
                "expected `local` or `ssh://[user@]host[:port][?options]`",
            ));
        };
        if scheme != "ssh" && scheme != "tls" {
            return Err(bad(&format!(
                "unknown scheme `{scheme}`: expected `ssh` or `tls`"
            )));
        }
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad("empty user name before `@`")),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad(&format!("`{p}` is not a port number")))?;
                (h, Some(port))
            }
            None => (hostport, None),
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("expected a host name"));
        }
        let kind = if scheme == "tls" {
            if user.is_some() {
                return Err(bad("a tls:// host has no user"));
            }
            let Some(port) = port else {
                return Err(bad("a tls:// host needs a port (`tls://host:port`)"));
            };
            HostKind::Tls {
                host: host.to_string(),
                port,
            }
        } else {
            HostKind::Ssh {
                user,
                host: host.to_string(),
                port,
            }
        };
        let mut spec = Self {
            name: host.to_string(),
            kind,
            jobs: None,
            tags: Vec::new(),
            capacity: BTreeMap::new(),
            shared_fs: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "jobs" => {
                    let jobs = value
                        .parse::<usize>()
                        .ok()
                        .filter(|&j| j > 0)
                        .ok_or_else(|| bad(&format!("jobs=`{value}` is not a positive number")))?;
                    spec.jobs = Some(jobs);
                }
                "tags" => {
                    spec.tags = value
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect();
                }
                "capacity" => {
                    for item in value.split(',').filter(|t| !t.is_empty()) {
                        let (name, n) = item
                            .split_once(':')
                            .and_then(|(name, n)| Some((name, n.parse::<u32>().ok()?)))
                            .ok_or_else(|| bad(&format!("capacity `{item}` is not NAME:N")))?;
                        spec.capacity.insert(name.to_string(), n);
                    }
                }
                "shared_fs" => spec.shared_fs = matches!(value, "1" | "true" | "yes"),
                "name" => spec.name = value.to_string(),
                other => {
                    return Err(bad(&format!(
                        "unknown option `{other}`: expected jobs, tags, capacity, shared_fs or name"
                    )))
                }
            }
        }
        Ok(spec)
    }
}

/// A bad host spec or hosts file.
#[derive(Debug, Error)]
pub enum SpecError {
    #[error("bad host `{spec}`: {why}")]
    Bad { spec: String, why: String },
    #[error("cannot read hosts file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{col}: {message}", path.display())]
    File {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("host name `{0}` is given twice")]
    Duplicate(String),
}

/// One entry of a hosts file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    url: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    jobs: Option<usize>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    capacity: BTreeMap<String, u32>,
    #[serde(default)]
    shared_fs: Option<bool>,
}

/// Reads a hosts file: `[(url: "ssh://build1", jobs: 8, tags: ["linux"], capacity: {"gpu": 2})]`.
pub fn load_hosts_file(path: &Path) -> Result<Vec<HostSpec>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let entries: Vec<Entry> = ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str(&text)
        .map_err(|e| SpecError::File {
            path: path.to_path_buf(),
            line: e.position.line,
            col: e.position.col,
            message: format!(
                "{}; expected a list like [(url: \"ssh://host\", jobs: 4)]",
                e.code
            ),
        })?;
    let mut specs = Vec::with_capacity(entries.len());
    for e in entries {
        let mut spec = HostSpec::parse(&e.url)?;
        if let Some(name) = e.name {
            spec.name = name;
        }
        if e.jobs.is_some() {
            spec.jobs = e.jobs;
        }
        spec.tags.extend(e.tags);
        spec.capacity.extend(e.capacity);
        if let Some(shared) = e.shared_fs {
            spec.shared_fs = shared;
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Checks that no two hosts share a name.
pub fn check_unique(specs: &[HostSpec]) -> Result<(), SpecError> {
    let mut seen = std::collections::HashSet::new();
    for s in specs {
        if !seen.insert(s.name.as_str()) {
            return Err(SpecError::Duplicate(s.name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_options() {
        let h = HostSpec::parse("ssh://build1?shared_fs=1&capacity=gpu:2,mem:8").unwrap();
        assert_eq!(h.name, "build1");
        assert!(h.shared_fs);
        assert_eq!(h.capacity["gpu"], 2);
        assert_eq!(h.capacity["mem"], 8);
        assert!(matches!(
            h.kind,
            HostKind::Ssh {
                user: None,
                port: None,
                ..
            }
        ));
        assert_eq!(HostSpec::parse("local").unwrap().kind, HostKind::Local);
    }

    #[test]
    fn bad_urls_say_what_was_expected() {
        for (url, want) in [
            ("build1", "expected `local` or `ssh://"),
            ("ftp://x", "unknown scheme `ftp`"),
            ("tls://x", "needs a port"),
            ("ssh://x:http", "`http` is not a port number"),
            ("ssh://x?jobs=0", "jobs=`0` is not a positive number"),
            ("ssh://x?color=red", "unknown option `color`"),
            ("ssh://-oProxyCommand=x", "expected a host name"),
        ] {
            let e = HostSpec::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn the_example_hosts_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("factories/hosts.ron");
        let specs = load_hosts_file(&path).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["build1", "gpu", "nfs-node"]);
        assert_eq!(specs[1].capacity["gpu"], 2);
        assert!(specs[2].shared_fs);
        check_unique(&specs).unwrap();
    }

    #[test]
    fn hosts_files_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.ron");
        std::fs::write(
            &path,
            "[\n  (url: \"ssh://b1\", name: \"one\", jobs: 8, tags: [\"gpu\"]),\n  (url: \"ssh://b2\", colour: 1),\n]\n",
        )
        .unwrap();
        let e = load_hosts_file(&path).unwrap_err().to_string();
        assert!(e.contains("hosts.ron:3:"), "{e}");
        assert!(e.contains("colour"), "{e}");
        std::fs::write(
            &path,
            "[(url: \"ssh://b1\", name: \"one\", jobs: 8, tags: [\"gpu\"])]",
        )
        .unwrap();
        let specs = load_hosts_file(&path).unwrap();
        assert_eq!(specs[0].name, "one");
        assert_eq!(specs[0].jobs, Some(8));
        assert_eq!(specs[0].tags, ["gpu"]);
    }
}

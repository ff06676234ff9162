//! The task model: names, metadata, outcomes and the work a task does.
//!
//! Everything here is plain data shared by the factory (which builds [`Task`]s from files), the
//! scheduler (which orders and runs them) and the reporters (which describe them). A task is
//! [`TaskName`] + [`Meta`] + [`Work`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use smallvec::SmallVec;
pub use thin_vec::ThinVec;

use crate::condition::Condition;
use crate::context::{Context, TaskError};

/// The longest timeout a definition or `--timeout` may give: a hundred years. Longer ones are
/// refused when the tree is checked, not found unrepresentable when the run starts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What [`TaskName`] and [`Token`] share: a newtype of an inline-or-shared string, built from
/// `&str` or `String`, shown as its text.
macro_rules! inline_str {
    ($ty:ident) => {
        impl $ty {
            pub fn new(text: impl AsRef<str>) -> Self {
                Self(ecow::EcoString::from(text.as_ref()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl From<&str> for $ty {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $ty {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }
    };
}

/// A task's name: a `/`-separated path, unique in a run. Cheap to clone: up to 15 bytes it is
/// kept inline (no heap block, no reference count touched by the threads that pass it around
/// in jobs and events), a longer one is a shared string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskName(ecow::EcoString);

inline_str!(TaskName);

impl TaskName {
    /// The directory part (`net/tcp` for `net/tcp/connect`), empty at the root.
    pub fn dir(&self) -> &str {
        self.0.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    /// The last path component (`connect` for `net/tcp/connect`).
    pub fn base(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, base)| base)
    }
}

/// A token or lock name in a definition (`requires`, `provides`, `claims`, `uses`). Up to 15
/// bytes it is kept inline, with no heap block of its own; at 10^6 definitions a `String` per
/// token was most of a task's memory and of the run's tear-down (issue 15). Reads as a `&str`
/// (`Deref`), compares with `&str` and `String`, and is built from either:
///
/// ```
/// use pexen::{Task, Token};
/// let t = Task::closure("a", |_| Ok(())).requires(["db", "net"]);
/// assert_eq!(*t.meta.requires, ["db", "net"]);
/// assert!(t.meta.requires[0].starts_with('d'));
/// let owned: String = t.meta.requires[1].to_string();
/// assert_eq!(Token::from(owned), "net");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(ecow::EcoString);

inline_str!(Token);

impl std::ops::Deref for Token {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Token {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Token {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&mut str> for Token {
    fn from(s: &mut str) -> Self {
        Self((&*s).into())
    }
}

impl From<&String> for Token {
    fn from(s: &String) -> Self {
        Self(s.as_str().into())
    }
}

impl From<Box<str>> for Token {
    fn from(s: Box<str>) -> Self {
        Self((&*s).into())
    }
}

impl From<std::borrow::Cow<'_, str>> for Token {
    fn from(s: std::borrow::Cow<'_, str>) -> Self {
        Self(s.into())
    }
}

impl From<char> for Token {
    fn from(c: char) -> Self {
        Self(c.into())
    }
}

impl From<&Token> for Token {
    fn from(t: &Token) -> Self {
        t.clone()
    }
}

impl From<Token> for String {
    fn from(t: Token) -> Self {
        t.0.into()
    }
}

impl From<&Token> for String {
    fn from(t: &Token) -> Self {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Token {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Token {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Token {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Token> for str {
    fn eq(&self, other: &Token) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Token> for &str {
    fn eq(&self, other: &Token) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Token> for String {
    fn eq(&self, other: &Token) -> bool {
        self == other.as_str()
    }
}

/// How a task (or one of its results) ended.
///
/// Ordered by severity for "worst of": `Skip` < `Pass` < `Warn` < `Fail` < `Timeout` = `Error`.
/// `Skip` is the least severe so that it wins only when nothing worse was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
    Error,
    Timeout,
    Skip,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Pass,
        Outcome::Warn,
        Outcome::Fail,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Skip,
    ];

    /// Severity rank: higher is worse. `Error` and `Timeout` rank equally.
    pub fn severity(self) -> u8 {
        match self {
            Outcome::Skip => 0,
            Outcome::Pass => 1,
            Outcome::Warn => 2,
            Outcome::Fail => 3,
            Outcome::Error | Outcome::Timeout => 4,
        }
    }

    /// The worse of two outcomes; on equal severity the first is kept.
    #[must_use]
    pub fn worst(self, other: Outcome) -> Outcome {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// `pass`, `warn` and `skip` count as success (exit code 0, satisfied tokens).
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Warn | Outcome::Skip)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Skip => "skip",
        }
    }

    /// Parses a status word as written in a `PEXEN_RESULTS` line or a journal.
    pub fn parse(word: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == word)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a failed task still satisfies the tokens it provides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnFailure {
    /// Dependents of a failed provider are skipped (the default).
    #[default]
    SkipDependents,
    /// Dependents run whatever the provider's outcome.
    RunDependents,
}

/// Which pool runs a closure task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PoolKind {
    /// On one of the scheduler's worker threads (the default).
    #[default]
    Threads,
    /// In a re-executed worker process of the same binary (crash isolation).
    Processes,
}

/// `requires` and `provides`: most tasks list one token or none, kept inline in the
/// definition (24 bytes); a longer list is a heap block. Reads as a slice of [`Token`]s.
pub type TokenList = SmallVec<[Token; 1]>;

/// Everything the scheduler needs to know about a task besides its work.
///
/// What the scheduler reads for every task (the four token lists and the priority) is kept
/// inline (a single required or provided token without a heap block of its own); the rest,
/// which most tasks leave at its default, is in [`Meta::more`], a pointer that takes no heap
/// block until something in it is set. A definition is then 80 bytes, where one with every
/// field inline took 170 (at 10^6 tasks, a fifth of a run's memory).
///
/// The other lists are [`ThinVec`]s: 8 bytes when empty (as most are). Read all of them like
/// `Vec`s; assign with `.into()`. Fields of [`MoreMeta`] read and assign through `more`:
///
/// ```
/// use std::time::Duration;
/// use pexen::Task;
/// let mut t = Task::closure("lint", |_| Ok(())).tags(["fast"]);
/// t.meta.more.inputs = vec!["src/**/*.rs".to_string()].into();
/// t.meta.more.timeout = Some(Duration::from_secs(30));
/// assert_eq!(t.meta.more.tags, ["fast"]);
/// assert_eq!(t.meta.more.inputs.to_vec(), ["src/**/*.rs"]);
/// assert_eq!(t.meta.more.retries, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    /// Tokens that must be satisfied before the task starts.
    pub requires: TokenList,
    /// Tokens the task satisfies when it finishes successfully.
    pub provides: TokenList,
    /// Exclusive locks held while the task runs.
    pub claims: ThinVec<Token>,
    /// Shared locks held while the task runs.
    pub uses: ThinVec<Token>,
    /// Lowest starts first among runnable tasks.
    pub priority: i32,
    /// Everything else; serialized flat, beside the fields above.
    #[serde(flatten)]
    pub more: More,
}

/// The metadata most tasks leave at its default (see [`Meta`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MoreMeta {
    /// Counted resources held while the task runs.
    pub slots: BTreeMap<String, u32>,
    /// Watchdog limit for one attempt (at most [`MAX_TIMEOUT`] in definitions and on the CLI).
    pub timeout: Option<Duration>,
    /// Extra attempts after `fail`, `error` or `timeout`.
    pub retries: u32,
    pub on_failure: OnFailure,
    pub tags: ThinVec<String>,
    /// Paths or globs, relative to the task's working directory, hashed into its fingerprint.
    pub inputs: ThinVec<String>,
    /// Which pool runs a closure task (ignored for command tasks); `None` takes the run's
    /// default ([`crate::SchedulerBuilder::default_pool`]).
    pub pool: Option<PoolKind>,
    /// A version (or salt) hashed into the task's fingerprint: change it to rerun the task on
    /// resume when something its definition cannot show changed (a value a closure captures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Box<str>>,
    /// The exclusivity group the task belongs to (`None`: the group `""`); see
    /// [`crate::Group`].
    #[serde(default)]
    pub group: Option<Box<str>>,
    /// Conditions that must all hold when the run starts, or the task ends `skip`.
    #[serde(default)]
    pub when: ThinVec<Condition>,
    /// Globs (relative to the task's working directory) copied back from a remote host after
    /// the task succeeds there (SPEC 9).
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub outputs: ThinVec<String>,
    /// The task runs only on a host carrying every one of these tags (SPEC 9).
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub host_tags: ThinVec<String>,
}

/// The defaults that an unset [`More`] reads as.
static DEFAULT_MORE: MoreMeta = MoreMeta {
    slots: BTreeMap::new(),
    timeout: None,
    retries: 0,
    on_failure: OnFailure::SkipDependents,
    tags: ThinVec::new(),
    inputs: ThinVec::new(),
    pool: None,
    version: None,
    group: None,
    when: ThinVec::new(),
    outputs: ThinVec::new(),
    host_tags: ThinVec::new(),
};

/// A [`MoreMeta`] that takes no heap block while it holds the defaults: it reads as
/// [`MoreMeta::default`] until written (the first mutable access allocates), 8 bytes inline.
/// Comparison, hashing and serialization see the fields, whether allocated or not.
#[derive(Clone, Default)]
pub struct More(Option<Box<MoreMeta>>);

impl More {
    /// Whether nothing was ever written (no heap block).
    pub fn is_unset(&self) -> bool {
        self.0.is_none()
    }
}

impl From<MoreMeta> for More {
    /// Keeps no heap block for a value equal to the defaults.
    fn from(more: MoreMeta) -> Self {
        if more == DEFAULT_MORE {
            Self(None)
        } else {
            Self(Some(Box::new(more)))
        }
    }
}

impl std::ops::Deref for More {
    type Target = MoreMeta;

    fn deref(&self) -> &MoreMeta {
        self.0.as_deref().unwrap_or(&DEFAULT_MORE)
    }
}

impl std::ops::DerefMut for More {
    fn deref_mut(&mut self) -> &mut MoreMeta {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for More {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for More {}

impl std::hash::Hash for More {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl fmt::Debug for More {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl Serialize for More {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for More {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        MoreMeta::deserialize(deserializer).map(More::from)
    }
}

/// What a command task runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Run {
    /// A program and its arguments, run directly.
    Cmd(Vec<String>),
    /// A script given to `sh -c`.
    Shell(String),
}

/// A command task: a child process in its own process group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommandSpec {
    pub run: Run,
    /// Extra environment, added after pexen's own variables.
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` is the current directory.
    pub cwd: Option<PathBuf>,
    /// An executable from the task tree that the command runs, hashed into the fingerprint.
    pub program: Option<PathBuf>,
    /// Extra `sbatch` arguments when the run goes to Slurm (`--partition=gpu`); ignored
    /// elsewhere. Not part of the fingerprint: where a task runs does not change what it does.
    pub slurm_args: Vec<String>,
}

impl CommandSpec {
    pub fn new(run: Run) -> Self {
        Self {
            run,
            env: BTreeMap::new(),
            cwd: None,
            program: None,
            slurm_args: Vec::new(),
        }
    }

    /// The argument vector to execute (`sh -c SCRIPT` for [`Run::Shell`]).
    pub fn argv(&self) -> Vec<String> {
        match &self.run {
            Run::Cmd(argv) => argv.clone(),
            Run::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        }
    }
}

/// The signature of a closure task.
pub type TaskFn = dyn Fn(&Context) -> Result<(), TaskError> + Send + Sync;

/// What a task does when it runs.
#[derive(Clone)]
pub enum Work {
    /// A Rust closure, run on a worker thread or in a worker process.
    Closure(Arc<TaskFn>),
    /// An external command.
    Command(Arc<CommandSpec>),
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Work::Closure(_) => f.write_str("Closure(..)"),
            Work::Command(spec) => f.debug_tuple("Command").field(spec).finish(),
        }
    }
}

/// One task: a name, its metadata and its work.
#[derive(Clone, Debug)]
pub struct Task {
    // Starting an attempt reads the name and the work and nothing else of the definition;
    // declared side by side (the compiler may still place fields as it likes; measured, it
    // made no difference, see doc/benchmarks.md).
    pub name: TaskName,
    pub work: Work,
    pub meta: Meta,
}

impl Task {
    /// A closure task with default metadata; chain the builder methods to add metadata.
    ///
    /// ```
    /// use pexen::Task;
    /// let t = Task::closure("build/lib", |_ctx| Ok(())).provides(["lib"]).priority(-1);
    /// assert_eq!(*t.meta.provides, ["lib"]);
    /// ```
    pub fn closure<F>(name: impl Into<TaskName>, f: F) -> Self
    where
        F: Fn(&Context) -> Result<(), TaskError> + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            meta: Meta::default(),
            work: Work::Closure(Arc::new(f)),
        }
    }

    /// A command task with default metadata.
    pub fn command(name: impl Into<TaskName>, spec: CommandSpec) -> Self {
        Self {
            name: name.into(),
            meta: Meta::default(),
            work: Work::Command(Arc::new(spec)),
        }
    }

    #[must_use]
    pub fn requires<I: IntoIterator<Item = S>, S: Into<Token>>(mut self, tokens: I) -> Self {
        append_tokens(&mut self.meta.requires, tokens);
        self
    }

    #[must_use]
    pub fn provides<I: IntoIterator<Item = S>, S: Into<Token>>(mut self, tokens: I) -> Self {
        append_tokens(&mut self.meta.provides, tokens);
        self
    }

    #[must_use]
    pub fn claims<I: IntoIterator<Item = S>, S: Into<Token>>(mut self, locks: I) -> Self {
        append(&mut self.meta.claims, locks);
        self
    }

    #[must_use]
    pub fn uses<I: IntoIterator<Item = S>, S: Into<Token>>(mut self, locks: I) -> Self {
        append(&mut self.meta.uses, locks);
        self
    }

    #[must_use]
    pub fn slot(mut self, name: impl Into<String>, count: u32) -> Self {
        self.meta.more.slots.insert(name.into(), count);
        self
    }

    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.meta.priority = priority;
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.meta.more.timeout = Some(timeout);
        self
    }

    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.meta.more.retries = retries;
        self
    }

    #[must_use]
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.meta.more.on_failure = on_failure;
        self
    }

    #[must_use]
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        append(&mut self.meta.more.tags, tags);
        self
    }

    /// Files whose content is part of the task's fingerprint: paths or globs, relative to the
    /// task's working directory (the current directory for a closure). A changed input reruns
    /// the task on resume.
    ///
    /// ```
    /// use pexen::Task;
    /// let t = Task::closure("docs", |_| Ok(())).inputs(["doc/*.md", "book.toml"]);
    /// assert_eq!(t.meta.more.inputs, ["doc/*.md", "book.toml"]);
    /// ```
    #[must_use]
    pub fn inputs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, inputs: I) -> Self {
        append(&mut self.meta.more.inputs, inputs);
        self
    }

    /// A version (or salt) that enters the task's fingerprint, for what its definition cannot
    /// show: a closure's fingerprint covers its name, metadata and inputs, not the values it
    /// captures. Derive the version from those values, and a change reruns the task (and its
    /// dependents) on resume, as ninja reruns a changed command line.
    ///
    /// ```
    /// use pexen::state::fingerprints;
    /// use pexen::Task;
    ///
    /// let build = |opt: &'static str| {
    ///     Task::closure("build", move |_| {
    ///         println!("cc {opt} main.c");
    ///         Ok(())
    ///     })
    ///     .version(opt)
    /// };
    /// let o2 = fingerprints(&[build("-O2")]);
    /// let o3 = fingerprints(&[build("-O3")]);
    /// assert_ne!(o2[0].definition, o3[0].definition);
    /// ```
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.meta.more.version = Some(version.into().into_boxed_str());
        self
    }

    /// Runs this task only on hosts carrying every tag in `tags`.
    #[must_use]
    pub fn host_tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        append(&mut self.meta.more.host_tags, tags);
        self
    }

    /// Runs this closure task on `pool`, whatever the run's default pool.
    #[must_use]
    pub fn pool(mut self, pool: PoolKind) -> Self {
        self.meta.more.pool = Some(pool);
        self
    }

    /// Puts the task in an exclusivity group declared with [`crate::SchedulerBuilder::group`].
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.meta.more.group = Some(group.into().into_boxed_str());
        self
    }

    /// Adds a condition: evaluated when the run starts; if it does not hold the task ends
    /// `skip` with the part that failed as its cause.
    #[must_use]
    pub fn when(mut self, condition: Condition) -> Self {
        self.meta.more.when.push(condition);
        self
    }
}

/// Appends `tokens` to a [`TokenList`], with exactly the room they need once it spills.
fn append_tokens<I: IntoIterator<Item = S>, S: Into<Token>>(list: &mut TokenList, tokens: I) {
    let tokens = tokens.into_iter().map(Into::into);
    list.reserve_exact(tokens.size_hint().0);
    list.extend(tokens);
}

/// Appends `items` to a list of a definition. An empty list gets exactly the room its first
/// items need: `ThinVec` otherwise starts at four (a single token then took a 128-byte block
/// instead of 48, at 10^6 tasks 80 bytes per task and list).
fn append<T, I: IntoIterator<Item = S>, S: Into<T>>(list: &mut ThinVec<T>, items: I) {
    let items = items.into_iter().map(Into::into);
    if list.is_empty() {
        list.reserve_exact(items.size_hint().0);
    }
    list.extend(items);
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn worst_of_follows_severity() {
        assert_eq!(Outcome::Pass.worst(Outcome::Warn), Outcome::Warn);
        assert_eq!(Outcome::Skip.worst(Outcome::Pass), Outcome::Pass);
        assert_eq!(Outcome::Fail.worst(Outcome::Skip), Outcome::Fail);
        assert_eq!(Outcome::Timeout.worst(Outcome::Fail), Outcome::Timeout);
        assert_eq!(Outcome::Error.worst(Outcome::Timeout), Outcome::Error);
        assert_eq!(Outcome::Skip.worst(Outcome::Skip), Outcome::Skip);
    }

    #[test]
    fn names_split_into_dir_and_base() {
        let n = TaskName::new("net/tcp/connect");
        assert_eq!((n.dir(), n.base()), ("net/tcp", "connect"));
        let n = TaskName::new("top");
        assert_eq!((n.dir(), n.base()), ("", "top"));
    }

    #[test]
    fn a_definition_stays_small() {
        // 10^6 definitions are walked during validation and freed at the end: every byte
        // counts (issue 15). `requires` and `provides` hold one token inline (24 bytes each),
        // the other lists take 8 bytes each, the rarely set metadata 8.
        let size = std::mem::size_of::<Task>();
        assert!(size <= 112, "a Task is {size} bytes");
        assert_eq!(std::mem::size_of::<Meta>(), 80);
        assert_eq!(std::mem::size_of::<TokenList>(), 24);
    }

    #[test]
    fn more_metadata_takes_a_heap_block_only_once_written() {
        let t = Task::closure("a", |_| Ok(())).requires(["x"]).priority(3);
        assert!(t.meta.more.is_unset());
        assert_eq!(t.meta.more.timeout, None);
        assert_eq!(*t.meta.more, MoreMeta::default());
        let mut t = t.retries(2);
        assert!(!t.meta.more.is_unset());
        assert_eq!(t.meta.more.retries, 2);
        // Written back to the defaults: equal to an unset one, as it hashes and serializes.
        t.meta.more.retries = 0;
        let unset = Task::closure("a", |_| Ok(())).requires(["x"]).priority(3);
        assert_eq!(t.meta, unset.meta);
        assert!(More::from(MoreMeta::default()).is_unset());
        let state = std::hash::RandomState::new();
        assert_eq!(state.hash_one(&t.meta), state.hash_one(&unset.meta));
    }

    #[test]
    fn metadata_serializes_flat_and_reads_back() {
        let t = Task::closure("a", |_| Ok(()))
            .provides(["p"])
            .timeout(Duration::from_secs(5))
            .tags(["slow"]);
        let json = serde_json::to_value(&t.meta).unwrap();
        assert_eq!(json["provides"], serde_json::json!(["p"]));
        assert_eq!(json["tags"], serde_json::json!(["slow"]));
        assert_eq!(json["retries"], 0);
        assert!(json.get("more").is_none(), "{json}");
        let back: Meta = serde_json::from_value(json).unwrap();
        assert_eq!(back, t.meta);
        let plain: Meta =
            serde_json::from_value(serde_json::to_value(Meta::default()).unwrap()).unwrap();
        assert!(plain.more.is_unset());
    }

    #[test]
    fn a_list_built_from_one_token_holds_one() {
        let t = Task::closure("a", |_| Ok(()))
            .provides(["x"])
            .requires(vec!["y".to_string()]);
        assert!(!t.meta.provides.spilled() && !t.meta.requires.spilled());
        let t = t.provides(["z", "w"]).claims(["lock"]);
        assert_eq!(*t.meta.provides, ["x", "z", "w"]);
        assert_eq!(t.meta.provides.capacity(), 3);
        assert_eq!(t.meta.claims.capacity(), 1);
    }

    #[test]
    fn status_words_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("ok"), None);
    }
}

//! Definition problems found while loading a task tree.
//!
//! Every problem names the file and, where the file could be read, the line and column of the
//! offending text, and says what was expected. [`FactoryErrors`] carries all of them at once so
//! that a user fixes a broken tree in one round trip.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A place in a definition file: `path:line:column`, both 1-based, columns counted in characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file, as the tree root given to [`load`](super::load) joined with its relative path.
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// One problem in the definition of a task tree.
#[derive(Debug, Error)]
pub enum FactoryError {
    /// Text that is not valid RON, or a value of the wrong type.
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },
    #[error(
        "{location}: unknown field `{field}`{}, expected one of {}",
        did_you_mean(field, expected),
        one_of(expected)
    )]
    UnknownField {
        location: Location,
        field: String,
        expected: &'static [&'static str],
    },
    #[error(
        "{location}: unknown variant `{found}`{}, expected one of {}",
        did_you_mean(found, expected),
        one_of(expected)
    )]
    UnknownVariant {
        location: Location,
        found: String,
        expected: &'static [&'static str],
    },
    #[error("{location}: missing field `{field}`")]
    MissingField {
        location: Location,
        field: &'static str,
    },
    #[error("{location}: field `{field}` is given twice")]
    DuplicateField {
        location: Location,
        field: &'static str,
    },
    #[error(
        "{location}: invalid duration `{value}` ({source}), expected a duration such as \"30s\", \"5m\" or \"1h 30m\""
    )]
    BadDuration {
        location: Location,
        value: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error(
        "{location}: `timeout: \"{value}\"` would end every attempt at once, expected a positive \
         duration such as \"30s\" (leave `timeout` out for none)"
    )]
    ZeroTimeout { location: Location, value: String },
    #[error("{location}: timeout `{value}` is too long, expected at most 100 years")]
    TimeoutTooLong { location: Location, value: String },
    #[error("{location}: invalid UTF-8 (byte 0x{byte:02x}), expected UTF-8 text")]
    NotUtf8 { location: Location, byte: u8 },
    #[error("{location}: empty `run`, expected a program (`Cmd([\"./t\"])`) or a script (`Shell(\"make\")`)")]
    EmptyRun { location: Location },
    #[error("{location}: invalid task name `{name}`: {reason}")]
    BadName {
        location: Location,
        name: String,
        reason: &'static str,
    },
    #[error("{location}: task `{name}` is defined twice in this file")]
    DuplicateKey { location: Location, name: String },
    #[error(
        "{location}: `capacity` may only be declared in the `_dir.ron` at the root of the tree"
    )]
    CapacityOutsideRoot { location: Location },
    #[error("{location}: invalid condition: {problem}")]
    BadCondition { location: Location, problem: String },
    #[error("{location}: unknown group `{group}`, expected one of the groups declared in the root `_dir.ron`{}", if declared.is_empty() { String::from(" (it declares none)") } else { format!(": {}", one_of_owned(declared)) })]
    UnknownGroup {
        location: Location,
        group: String,
        declared: Vec<String>,
    },
    #[error(
        "{location}: `{field}` may only be declared in the `_dir.ron` at the root of the tree"
    )]
    RootOnly {
        location: Location,
        field: &'static str,
    },
    #[error("{location}: token `{token}` is declared virtual, but no task provides it")]
    VirtualWithoutProvider { location: Location, token: String },
    #[error("{}: generator {problem}{}", path.display(), stderr_note(stderr))]
    Generator {
        path: PathBuf,
        problem: String,
        /// What the generator wrote to stderr (the tail, when long).
        stderr: String,
    },
    #[error("{}: file name is not UTF-8, expected a name usable as a task name", path.display())]
    NonUtf8Name { path: PathBuf },
    #[error("{}: symbolic link loop, expected a link that does not lead back to its own directory", path.display())]
    SymlinkLoop { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FactoryError {
    /// The file the problem is in.
    pub fn file(&self) -> &std::path::Path {
        match self {
            FactoryError::SymlinkLoop { path }
            | FactoryError::NonUtf8Name { path }
            | FactoryError::Generator { path, .. }
            | FactoryError::Io { path, .. } => path,
            _ => {
                &self
                    .location()
                    .expect("every error but a path error has a location")
                    .file
            }
        }
    }

    /// Where in its file the problem is, when the file could be read.
    pub fn location(&self) -> Option<&Location> {
        match self {
            FactoryError::SymlinkLoop { .. }
            | FactoryError::NonUtf8Name { .. }
            | FactoryError::Generator { .. }
            | FactoryError::Io { .. } => None,
            FactoryError::Syntax { location, .. }
            | FactoryError::UnknownField { location, .. }
            | FactoryError::UnknownVariant { location, .. }
            | FactoryError::MissingField { location, .. }
            | FactoryError::DuplicateField { location, .. }
            | FactoryError::BadDuration { location, .. }
            | FactoryError::ZeroTimeout { location, .. }
            | FactoryError::TimeoutTooLong { location, .. }
            | FactoryError::NotUtf8 { location, .. }
            | FactoryError::EmptyRun { location }
            | FactoryError::BadName { location, .. }
            | FactoryError::DuplicateKey { location, .. }
            | FactoryError::CapacityOutsideRoot { location }
            | FactoryError::BadCondition { location, .. }
            | FactoryError::UnknownGroup { location, .. }
            | FactoryError::RootOnly { location, .. }
            | FactoryError::VirtualWithoutProvider { location, .. } => Some(location),
        }
    }
}

fn one_of_owned(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `; its stderr:` and the text, indented, or nothing when it wrote nothing.
fn stderr_note(stderr: &str) -> String {
    let text = stderr.trim_end();
    if text.is_empty() {
        return String::new();
    }
    let mut out = String::from("; its stderr:");
    for line in text.lines() {
        out.push_str("\n      ");
        out.push_str(line);
    }
    out
}

/// `: did you mean `priority`?` for a name close to one of `known` (clap's measure for flags:
/// Jaro similarity above 0.7), or nothing.
fn did_you_mean(found: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro(found, k), k))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every definition problem of a tree, in walk order.
#[derive(Debug, Error)]
pub struct FactoryErrors(pub Vec<FactoryError>);

impl fmt::Display for FactoryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the task definitions",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

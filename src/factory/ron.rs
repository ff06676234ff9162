//! RON definition files -> typed definitions, with a position for every problem.
//!
//! `ron` reports a position for syntax errors; this module maps each of its errors to a typed
//! [`FactoryError`] pointing at the start of the offending token (not just past it), and finds
//! the position of fields whose value is checked after parsing (durations, `run`, `capacity`)
//! with the small scanner of RON's lexical structure in [`super::scan`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use ron::error::{Error as RonError, Position, SpannedError};
use ron::extensions::Extensions;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::{FactoryError, Location};
pub(crate) use super::scan::skip_trivia;
use super::scan::{field_at, find_field};
use crate::task::{OnFailure, Run};

/// Declares a definition struct: its own fields first, then the metadata fields that tasks and
/// `_dir.ron` defaults share. Two structs (not one with optional fields) so that
/// `deny_unknown_fields` lists exactly what each kind of file accepts.
macro_rules! definition {
    ($(#[$doc:meta])* $name:ident { $($(#[$fattr:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            $($(#[$fattr])* pub(crate) $field: $ty,)*
            #[serde(default)]
            pub(crate) requires: Vec<String>,
            #[serde(default)]
            pub(crate) provides: Vec<String>,
            #[serde(default)]
            pub(crate) claims: Vec<String>,
            #[serde(default)]
            pub(crate) uses: Vec<String>,
            #[serde(default)]
            pub(crate) slots: BTreeMap<String, u32>,
            #[serde(default)]
            pub(crate) priority: Option<i32>,
            #[serde(default)]
            pub(crate) timeout: Option<String>,
            #[serde(default)]
            pub(crate) retries: Option<u32>,
            #[serde(default)]
            pub(crate) on_failure: Option<OnFailure>,
            #[serde(default)]
            pub(crate) tags: Vec<String>,
            #[serde(default)]
            pub(crate) inputs: Vec<String>,
            #[serde(default)]
            pub(crate) env: BTreeMap<String, String>,
            #[serde(default)]
            pub(crate) cwd: Option<String>,
            #[serde(default)]
            pub(crate) group: Option<String>,
            #[serde(default)]
            pub(crate) when: Option<WhenDef>,
            #[serde(default)]
            pub(crate) slurm_args: Vec<String>,
            #[serde(default)]
            pub(crate) outputs: Vec<String>,
            #[serde(default)]
            pub(crate) host_tags: Vec<String>,
        }

        impl $name {
            /// The shared metadata fields, without this kind's own fields.
            pub(crate) fn common(&mut self) -> Common {
                Common {
                    requires: std::mem::take(&mut self.requires),
                    provides: std::mem::take(&mut self.provides),
                    claims: std::mem::take(&mut self.claims),
                    uses: std::mem::take(&mut self.uses),
                    slots: std::mem::take(&mut self.slots),
                    priority: self.priority,
                    timeout: self.timeout.take(),
                    retries: self.retries,
                    on_failure: self.on_failure,
                    tags: std::mem::take(&mut self.tags),
                    inputs: std::mem::take(&mut self.inputs),
                    env: std::mem::take(&mut self.env),
                    cwd: self.cwd.take(),
                    group: self.group.take(),
                    when: self.when.take(),
                    slurm_args: std::mem::take(&mut self.slurm_args),
                    outputs: std::mem::take(&mut self.outputs),
                    host_tags: std::mem::take(&mut self.host_tags),
                }
            }
        }
    };
}

definition! {
    /// One task: a `NAME.ron` file or one entry of a `NAME.tasks.ron` map.
    TaskDef { run: Run }
}

definition! {
    /// Defaults for every task below a directory: its `_dir.ron`.
    DirDef {
        #[serde(default)] capacity: Option<BTreeMap<String, u32>>,
        #[serde(default)] groups: Option<BTreeMap<String, GroupDef>>,
        #[serde(default, rename = "virtual")] virtual_tokens: Option<Vec<String>>,
    }
}

/// A `when` condition as written (SPEC 13); see [`crate::Condition`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhenDef {
    #[serde(default)]
    pub(crate) os: Vec<String>,
    #[serde(default)]
    pub(crate) arch: Vec<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) exists: Vec<String>,
    #[serde(default)]
    pub(crate) command: Vec<String>,
}

/// One entry of the root `_dir.ron`'s `groups: {"vm": (jobs: 2)}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupDef {
    #[serde(default)]
    pub(crate) jobs: Option<u32>,
}

impl TaskDef {
    pub(crate) fn from_parts(run: Run, c: Common) -> TaskDef {
        TaskDef {
            run,
            requires: c.requires,
            provides: c.provides,
            claims: c.claims,
            uses: c.uses,
            slots: c.slots,
            priority: c.priority,
            timeout: c.timeout,
            retries: c.retries,
            on_failure: c.on_failure,
            tags: c.tags,
            inputs: c.inputs,
            env: c.env,
            cwd: c.cwd,
            group: c.group,
            when: c.when,
            slurm_args: c.slurm_args,
            outputs: c.outputs,
            host_tags: c.host_tags,
        }
    }
}

/// The metadata fields shared by [`TaskDef`] and [`DirDef`], as written (durations unparsed).
#[derive(Debug, Default)]
pub(crate) struct Common {
    pub(crate) requires: Vec<String>,
    pub(crate) provides: Vec<String>,
    pub(crate) claims: Vec<String>,
    pub(crate) uses: Vec<String>,
    pub(crate) slots: BTreeMap<String, u32>,
    pub(crate) priority: Option<i32>,
    pub(crate) timeout: Option<String>,
    pub(crate) retries: Option<u32>,
    pub(crate) on_failure: Option<OnFailure>,
    pub(crate) tags: Vec<String>,
    pub(crate) inputs: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) when: Option<WhenDef>,
    pub(crate) slurm_args: Vec<String>,
    pub(crate) outputs: Vec<String>,
    pub(crate) host_tags: Vec<String>,
}

/// The text of one definition file and the path errors name.
pub(crate) struct Source<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// The 1-based line and character column of a byte offset.
    pub(crate) fn location(&self, offset: usize) -> Location {
        // An offset inside a multibyte character (`ron` reports some errors at the byte after a
        // backslash or a `/`) is the character's.
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            file: self.file.to_path_buf(),
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
        }
    }

    /// The locations of increasing byte offsets, in one pass over the text.
    pub(crate) fn locations(&self, offsets: impl Iterator<Item = usize>) -> Vec<Location> {
        let (mut line, mut line_start, mut pos) = (1, 0, 0);
        let bytes = self.text.as_bytes();
        offsets
            .map(|offset| {
                let offset = offset.min(bytes.len());
                while pos < offset {
                    if bytes[pos] == b'\n' {
                        line += 1;
                        line_start = pos + 1;
                    }
                    pos += 1;
                }
                Location {
                    file: self.file.to_path_buf(),
                    line,
                    col: self.text[line_start..offset].chars().count() + 1,
                }
            })
            .collect()
    }

    /// Parses `self.text[range]` as one `T`, mapping `ron`'s error to a typed, positioned one.
    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        range: Range<usize>,
    ) -> Result<T, FactoryError> {
        let slice = &self.text[range.clone()];
        ron::Options::default()
            .with_default_extension(Extensions::IMPLICIT_SOME)
            .from_str(slice)
            .map_err(|e| self.error(range, e))
    }

    /// Parses the task definition in `self.text[range]`: the fast path when it applies.
    pub(crate) fn parse_task(&self, range: Range<usize>) -> Result<TaskDef, FactoryError> {
        super::fast::task(self.text, range.clone()).map_or_else(|| self.parse(range), Ok)
    }

    fn error(&self, range: Range<usize>, e: SpannedError) -> FactoryError {
        let at = range.start + offset_of(&self.text[range.clone()], e.position);
        match e.code {
            RonError::NoSuchStructField {
                expected, found, ..
            } => FactoryError::UnknownField {
                location: self.location(ident_start(self.text, at)),
                field: found,
                expected,
            },
            RonError::NoSuchEnumVariant {
                expected, found, ..
            } => FactoryError::UnknownVariant {
                location: self.location(ident_start(self.text, at)),
                found,
                expected,
            },
            RonError::DuplicateStructField { field, .. } => FactoryError::DuplicateField {
                location: self.location(ident_start(self.text, at)),
                field,
            },
            // Reported at the start of the struct that lacks it: its end may be far away.
            RonError::MissingStructField { field, .. } => FactoryError::MissingField {
                location: self.location(skip_trivia(self.text.as_bytes(), range.start)),
                field,
            },
            code => FactoryError::Syntax {
                location: self.location(at),
                message: self.message(&code, range, at),
            },
        }
    }

    /// `ron`'s message about the text at `at`, in the terms of a task file: the field it is
    /// in and what that field takes, rather than the internal types it is parsed into.
    fn message(&self, code: &RonError, range: Range<usize>, at: usize) -> String {
        let raw = lower_first(&code.to_string())
            .replace("struct `TaskDef`", "a task definition `(run: ..., ...)`")
            .replace("struct `DirDef`", "`_dir.ron` defaults `(...)`");
        let is_type_error = matches!(
            code,
            RonError::ExpectedArray
                | RonError::ExpectedBoolean
                | RonError::ExpectedChar
                | RonError::ExpectedFloat
                | RonError::ExpectedInteger
                | RonError::ExpectedOption
                | RonError::ExpectedMap
                | RonError::ExpectedStructLike
                | RonError::ExpectedNamedStructLike(_)
                | RonError::ExpectedDifferentStructName { .. }
                | RonError::ExpectedUnit
                | RonError::ExpectedString
                | RonError::ExpectedIdentifier
                | RonError::IntegerOutOfBounds
                | RonError::InvalidValueForType { .. }
        );
        let Some(field) = field_at(self.text.as_bytes(), range, at) else {
            return raw;
        };
        match domain(field) {
            Some(domain) if is_type_error => {
                format!(
                    "`{field}` takes {domain}, found `{}`",
                    token_at(self.text, at)
                )
            }
            Some(_) => format!("in `{field}`: {raw}"),
            // Fields with a structure of their own (`when`) keep the parser's words: the error
            // is about a part of them.
            None => raw,
        }
    }

    /// The location of field `name` of the struct in `range`, or of the struct if not found.
    /// `value` picks the start of the field's value rather than its name.
    pub(crate) fn field_location(&self, range: Range<usize>, name: &str, value: bool) -> Location {
        let found = find_field(self.text.as_bytes(), range.clone(), name);
        let offset = match found {
            Some((name_at, value_at)) => {
                if value {
                    value_at
                } else {
                    name_at
                }
            }
            None => skip_trivia(self.text.as_bytes(), range.start),
        };
        self.location(offset)
    }
}

/// `ron` positions count lines and bytes from 1; turn one into a byte offset in `text`.
fn offset_of(text: &str, pos: Position) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(pos.line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + pos.col.saturating_sub(1)).min(text.len())
}

/// `ron` stops just after a bad identifier; step back to its first character.
fn ident_start(text: &str, mut at: usize) -> usize {
    let b = text.as_bytes();
    while at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
        at -= 1;
    }
    at
}

/// What a field takes, in a task file's terms.
fn domain(field: &str) -> Option<&'static str> {
    Some(match field {
        "run" => "a program `Cmd([\"./prog\", \"arg\"])` or a script `Shell(\"make\")`",
        "requires" | "provides" | "claims" | "uses" | "tags" | "inputs" => {
            "a list of strings, such as `[\"a\", \"b\"]`"
        }
        "slots" | "capacity" => "a map of names to whole numbers, such as `{\"gpu\": 1}`",
        "priority" => "a whole number (lower starts first), such as `-1` or `10`",
        "timeout" => "a duration string, such as `\"30s\"` or `\"5m\"`",
        "retries" => "a whole number of extra attempts, 0 or more",
        "on_failure" => "`SkipDependents` or `RunDependents`",
        "env" => "a map of strings, such as `{\"RUST_LOG\": \"info\"}`",
        "cwd" => "a path string, such as `\"..\"`",
        _ => return None,
    })
}

/// The token that starts at `at` (up to a delimiter), shortened for a message.
fn token_at(text: &str, at: usize) -> String {
    let rest = &text[at.min(text.len())..];
    let end = rest.find([',', '\n', ')', '}', ']']).unwrap_or(rest.len());
    let token = rest[..end].trim_end();
    if token.chars().count() > 40 {
        format!("{}...", token.chars().take(40).collect::<String>())
    } else {
        token.to_string()
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

/// A whole `.tasks.ron` map in file order, for when [`split_map`] cannot split it: parsing it
/// with `ron` in one piece yields `ron`'s precise syntax error.
pub(crate) struct OrderedMap(pub(crate) Vec<(String, TaskDef)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map from task names to tasks")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source<'_> {
        Source {
            file: Path::new("t.ron"),
            text,
        }
    }

    #[test]
    fn unknown_field_points_at_its_name() {
        let text = "(\n    run: Shell(\"true\"),\n    priorty: 1,\n)\n";
        let err = source(text).parse::<TaskDef>(0..text.len()).unwrap_err();
        let FactoryError::UnknownField {
            location,
            field,
            expected,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            (location.line, location.col, field.as_str()),
            (3, 5, "priorty")
        );
        assert!(expected.contains(&"priority"));
        assert!(err.to_string().starts_with(
            "t.ron:3:5: unknown field `priorty` (did you mean `priority`?), expected one of `run`"
        ));
    }

    #[test]
    fn type_errors_name_the_field_and_what_it_takes() {
        let msg = |text: &str| {
            source(text)
                .parse::<TaskDef>(0..text.len())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg("(run: Shell(\"t\"),\n retries: -1)"),
            "t.ron:2:11: `retries` takes a whole number of extra attempts, 0 or more, found `-1`"
        );
        assert!(
            msg("(run: Shell(\"t\"), timeout: 5)").contains("`timeout` takes a duration string")
        );
        assert!(msg("(run: Shell(\"t\"), requires: \"db\")").contains(
            "`requires` takes a list of strings, such as `[\"a\", \"b\"]`, found `\"db\"`"
        ));
        assert_eq!(
            msg("[1]"),
            "t.ron:1:1: expected opening `(` for a task definition `(run: ..., ...)`"
        );
        assert!(
            msg("(run: Shel(\"t\"))").contains("unknown variant `Shel` (did you mean `Shell`?)")
        );
        // Far from every known name: no suggestion.
        assert!(!msg("(run: Shell(\"t\"), zzz: 1)").contains("did you mean"));
    }

    #[test]
    fn one_pass_locations_match_single_ones() {
        let text = "{\n  \"a\": (),\n  \"é\": (), \"c\": ()\n}";
        let src = source(text);
        let offsets: Vec<usize> = text.match_indices('"').map(|(i, _)| i).step_by(2).collect();
        let one_pass = src.locations(offsets.iter().copied());
        let single: Vec<Location> = offsets.iter().map(|&o| src.location(o)).collect();
        assert_eq!(one_pass, single);
    }

    #[test]
    fn implicit_some_comments_and_trailing_commas_are_accepted() {
        let text = "// a test\n(run: Cmd([\"./t\", /* port */ \"0\",]), priority: -1, retries: 2, \
                    timeout: \"5s\", on_failure: RunDependents,)";
        let def = source(text).parse::<TaskDef>(0..text.len()).unwrap();
        assert_eq!(def.priority, Some(-1));
        assert_eq!(def.retries, Some(2));
        assert_eq!(def.on_failure, Some(OnFailure::RunDependents));
        assert_eq!(def.run, Run::Cmd(vec!["./t".into(), "0".into()]));
    }

    #[test]
    fn unknown_variant_and_missing_field_are_positioned() {
        let text = "(\n  run: Shel(\"x\"))";
        let err = source(text).parse::<TaskDef>(0..text.len()).unwrap_err();
        assert!(
            matches!(&err, FactoryError::UnknownVariant { location, found, .. }
            if (location.line, location.col, found.as_str()) == (2, 8, "Shel")),
            "{err:?}"
        );
        let text = "\n  (tags: [\"a\"])";
        let err = source(text).parse::<TaskDef>(0..text.len()).unwrap_err();
        assert!(
            matches!(&err, FactoryError::MissingField { location, field: "run" }
            if (location.line, location.col) == (2, 3)),
            "{err:?}"
        );
    }

    #[test]
    fn fields_are_found_past_nested_values_strings_and_comments() {
        let text = "( run: Shell(\"a, b) // \\\" c\"), /* tags: x */ env: {\"k\": \"v\"},\n  timeout: \"3 parsecs\" )";
        let loc = source(text).field_location(0..text.len(), "timeout", true);
        assert_eq!((loc.line, loc.col), (2, 12));
        let loc = source(text).field_location(0..text.len(), "nothing", true);
        assert_eq!((loc.line, loc.col), (1, 1));
    }
}

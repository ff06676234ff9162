//! A fast path for the common shape of a task definition.
//!
//! `ron` costs a few microseconds per task, most of the time of a 10^5-task tree. This parser
//! accepts the plain form that people and generators write (the fields of a task, strings
//! without escapes, decimal integers, comments, trailing commas) and gives up, returning `None`,
//! on anything else: unknown or repeated fields, escapes, raw strings, `Some(..)`, a missing
//! `run`, any syntax error. The caller then parses with `ron`, which accepts the rest of RON and
//! words every error. So this parser never reports an error and never accepts what `ron` would
//! reject, and the result is the same whichever parser produced it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::str::FromStr;

use super::ron::{skip_trivia, Common, TaskDef};
use crate::task::{OnFailure, Run};

/// Parses the task definition in `text[range]`, or `None` to let `ron` do it.
pub(crate) fn task(text: &str, range: Range<usize>) -> Option<TaskDef> {
    let mut p = Parser {
        text: &text[..range.end],
        at: range.start,
    };
    let def = p.task()?;
    (skip_trivia(p.text.as_bytes(), p.at) == range.end).then_some(def)
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Option<u8> {
        self.at = skip_trivia(self.text.as_bytes(), self.at);
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    fn ident(&mut self) -> Option<&'a str> {
        self.peek()?;
        let start = self.at;
        let b = self.text.as_bytes();
        while self.at < b.len() && (b[self.at].is_ascii_alphanumeric() || b[self.at] == b'_') {
            self.at += 1;
        }
        (self.at > start).then(|| &self.text[start..self.at])
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let len = self.text[self.at..].find(['"', '\\'])?;
        let s = &self.text[self.at..self.at + len];
        self.at += len;
        self.eat(b'"')?; // a backslash lands here and gives up: escapes are `ron`'s business
        Some(s.to_owned())
    }

    fn number<T: FromStr>(&mut self) -> Option<T> {
        self.peek()?;
        let b = self.text.as_bytes();
        let start = self.at;
        if b[self.at] == b'-' {
            self.at += 1;
        }
        while self.at < b.len() && b[self.at].is_ascii_digit() {
            self.at += 1;
        }
        // `1_000`, `0x10`, `1.5`: other forms, left to `ron`.
        if self.at < b.len()
            && (b[self.at].is_ascii_alphanumeric() || matches!(b[self.at], b'_' | b'.'))
        {
            return None;
        }
        self.text[start..self.at].parse().ok()
    }

    /// `[ item, ... ]`, trailing comma allowed.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        while self.peek()? != b']' {
            items.push(item(self)?);
            if self.peek()? != b']' {
                self.eat(b',')?;
            }
        }
        self.at += 1;
        Some(items)
    }

    /// `{ "key": value, ... }`; a repeated key gives up (`ron` keeps the last, which surprises).
    fn map<T>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<BTreeMap<String, T>> {
        self.eat(b'{')?;
        let mut map = BTreeMap::new();
        while self.peek()? != b'}' {
            let key = self.string()?;
            self.eat(b':')?;
            if map.insert(key, value(self)?).is_some() {
                return None;
            }
            if self.peek()? != b'}' {
                self.eat(b',')?;
            }
        }
        self.at += 1;
        Some(map)
    }

    fn run(&mut self) -> Option<Run> {
        let run = match self.ident()? {
            "Cmd" => {
                self.eat(b'(')?;
                Run::Cmd(self.list(Self::string)?)
            }
            "Shell" => {
                self.eat(b'(')?;
                Run::Shell(self.string()?)
            }
            _ => return None,
        };
        self.eat(b')')?;
        Some(run)
    }

    fn task(&mut self) -> Option<TaskDef> {
        const FIELDS: [&str; 17] = [
            "run",
            "requires",
            "provides",
            "claims",
            "uses",
            "slots",
            "priority",
            "timeout",
            "retries",
            "on_failure",
            "tags",
            "inputs",
            "env",
            "cwd",
            "group",
            "outputs",
            "host_tags",
        ];
        self.eat(b'(')?;
        let mut run = None;
        let mut c = Common::default();
        let mut seen = 0u32;
        while self.peek()? != b')' {
            let field = self.ident()?;
            let bit = FIELDS.iter().position(|&f| f == field)?;
            if seen & (1 << bit) != 0 {
                return None;
            }
            seen |= 1 << bit;
            self.eat(b':')?;
            match field {
                "run" => run = Some(self.run()?),
                "requires" => c.requires = self.list(Self::string)?,
                "provides" => c.provides = self.list(Self::string)?,
                "claims" => c.claims = self.list(Self::string)?,
                "uses" => c.uses = self.list(Self::string)?,
                "slots" => c.slots = self.map(Self::number)?,
                "priority" => c.priority = Some(self.number()?),
                "timeout" => c.timeout = Some(self.string()?),
                "retries" => c.retries = Some(self.number()?),
                "on_failure" => {
                    c.on_failure = Some(match self.ident()? {
                        "SkipDependents" => OnFailure::SkipDependents,
                        "RunDependents" => OnFailure::RunDependents,
                        _ => return None,
                    });
                }
                "tags" => c.tags = self.list(Self::string)?,
                "inputs" => c.inputs = self.list(Self::string)?,
                "env" => c.env = self.map(Self::string)?,
                "group" => c.group = Some(self.string()?),
                "outputs" => c.outputs = self.list(Self::string)?,
                "host_tags" => c.host_tags = self.list(Self::string)?,
                _ => c.cwd = Some(self.string()?),
            }
            if self.peek()? != b')' {
                self.eat(b',')?;
            }
        }
        self.at += 1;
        Some(TaskDef::from_parts(run?, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path, when it answers, agrees with `ron`.
    fn same_as_ron(text: &str) -> bool {
        let fast = task(text, 0..text.len());
        let slow = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str::<TaskDef>(text);
        if let Some(fast) = &fast {
            assert_eq!(
                format!("{fast:?}"),
                format!("{:?}", slow.unwrap()),
                "{text}"
            );
        }
        fast.is_some()
    }

    #[test]
    fn plain_definitions_take_the_fast_path() {
        assert!(same_as_ron("(run: Shell(\"true\"))"));
        assert!(same_as_ron(
            "// c\n( run : Cmd([\"./x\", \"--port\", \"0\",]), /* c */ requires: [\"a\", \"b\"], \
             provides: [], claims: [\"l\"], uses: [\"u\"], slots: {\"gpu\": 1, \"mem\": 2,}, \
             priority: -3, timeout: \"30s\", retries: 2, on_failure: RunDependents, tags: [\"t\"], \
             inputs: [\"src/*.c\"], env: {\"K\": \"V\"}, cwd: \"sub\", group: \"vm\", )\n"
        ));
    }

    #[test]
    fn anything_else_is_left_to_ron() {
        for text in [
            "(run: Shell(\"a\\\"b\"))",
            "(run: Shell(r\"x\"))",
            "(run: Shell(\"x\"), priority: Some(1))",
            "(run: Shell(\"x\"), priority: 0x10)",
            "(run: Shell(\"x\"), retries: -1)",
            "(run: Shell(\"x\"), priorty: 1)",
            "(run: Shell(\"x\"), tags: [], tags: [])",
            "(run: Shell(\"x\"), env: {\"a\": \"1\", \"a\": \"2\"})",
            "(tags: [])",
            "(run: Shell(\"x\") tags: [])",
            "(run: Shell(\"x\")) trailing",
            "TaskDef(run: Shell(\"x\"))",
            "(run: Shell(\"x\"), priority: 99999999999)",
        ] {
            assert!(!same_as_ron(text), "{text}");
        }
    }
}

//! A test file's text as JSON data, with the line of every key and list item, so that each
//! problem found later (an unknown field, a bad assertion, a failed case) can name its line.
//!
//! The data comes from the same parsers as workflows use (serde_json; serde_yaml_ng, turned into
//! JSON by codegen's `yaml_to_json`: merge keys applied, tags refused, numbers finite); the lines
//! come from a second, event-level pass with saphyr-parser, which also
//! finds duplicate keys (serde_json would silently keep the last one).

use super::path::{Path, Seg};
use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};
use serde_json::Value;
use std::collections::HashMap;

/// Data with the 1-based line of each path that is written in the text.
#[derive(Debug, Default)]
pub(crate) struct Located {
    pub(crate) value: Value,
    lines: HashMap<Path, usize>,
}

impl Located {
    /// The line of `path`, or of its nearest ancestor written in the text (a value that came
    /// from a merge key or an alias has its parent's line).
    pub(crate) fn line(&self, path: &Path) -> Option<usize> {
        let mut p = path.0.as_slice();
        loop {
            if let Some(l) = self.lines.get(&Path(p.to_vec())) {
                return Some(*l);
            }
            if p.is_empty() {
                return None;
            }
            p = &p[..p.len() - 1];
        }
    }
}

/// A syntax problem: its line if known, and what is wrong.
pub(crate) type SyntaxError = (Option<usize>, String);

/// Parses JSON (`json`) or YAML text.
pub(crate) fn parse(text: &str, json: bool) -> Result<Located, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !json {
        if let Some((line, column, what)) = flowrun_codegen::yaml_too_deep(text) {
            return Err((
                Some(line),
                format!("invalid YAML: {what} (column {column})"),
            ));
        }
    }
    let value = if json {
        serde_json::from_str::<Value>(text)
            .map_err(|e| (Some(e.line()), format!("invalid JSON: {e}")))?
    } else {
        let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let (at, message) = flowrun_codegen::yaml_syntax_error(&e, text);
            let message = match at {
                Some((_, column)) => format!("{message} (column {column})"),
                None => message,
            };
            (at.map(|a| a.0), message)
        })?;
        // As a workflow file's data: merges applied, tags refused, numbers finite (`.nan` is
        // no JSON value; serde's conversion would make it null without a word).
        match flowrun_codegen::yaml_to_json(y) {
            Ok(v) => v,
            Err((at, message)) => {
                let at = Path(
                    at.into_iter()
                        .map(|s| match s {
                            flowrun_codegen::Seg::Key(k) => Seg::Key(k),
                            flowrun_codegen::Seg::Index(i) => Seg::Index(i),
                        })
                        .collect(),
                );
                let mut lines = Lines::default();
                let _ = Parser::new_from_str(text).load(&mut lines, false);
                // The nearest place known: a key written another way (`0x10` is "16") or a
                // value inside a list of merges has no line of its own.
                let located = Located {
                    value: Value::Null,
                    lines: lines.lines,
                };
                let line = located.line(&at);
                let place = if at.0.is_empty() {
                    String::new()
                } else {
                    format!("{at}: ")
                };
                return Err((line, format!("invalid YAML: {place}{message}")));
            }
        }
    };
    let mut lines = Lines::default();
    // The data parsed, so this pass fails only where saphyr is stricter; lines are then unknown.
    if Parser::new_from_str(text).load(&mut lines, false).is_ok() {
        if let Some((line, key)) = lines.duplicate {
            return Err((Some(line), format!("duplicate key '{key}'")));
        }
    }
    Ok(Located {
        value,
        lines: lines.lines,
    })
}

enum Frame {
    Map {
        path: Path,
        /// The key of the value that comes next; `None` while a key is expected.
        key: Option<String>,
        seen: std::collections::HashSet<String>,
    },
    Seq {
        path: Path,
        index: usize,
    },
    /// A complex key (a mapping or list used as a key): nothing inside is recorded.
    Skip,
}

#[derive(Default)]
struct Lines {
    stack: Vec<Frame>,
    lines: HashMap<Path, usize>,
    duplicate: Option<(usize, String)>,
}

impl Lines {
    /// Where a node that starts now sits: `Some(path)` for a value, `None` when it is a key
    /// (handled here) or inside a complex key.
    fn place(&mut self, scalar_key: Option<&str>, line: usize) -> Option<Path> {
        match self.stack.last_mut() {
            None => Some(Path::default()),
            Some(Frame::Skip) => None,
            Some(Frame::Seq { path, index }) => {
                let p = path.child(Seg::Index(*index));
                *index += 1;
                self.lines.entry(p.clone()).or_insert(line);
                Some(p)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                Some(k) => Some(path.key(&k)),
                None => {
                    let k = scalar_key.unwrap_or("").to_string();
                    if !seen.insert(k.clone()) && self.duplicate.is_none() && k != "<<" {
                        self.duplicate = Some((line, k.clone()));
                    }
                    self.lines.entry(path.key(&k)).or_insert(line);
                    *key = Some(k);
                    None
                }
            },
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl<'input> SpannedEventReceiver<'input> for Lines {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        let line = span.start.line();
        match ev {
            Event::Scalar(text, ..) => {
                self.place(Some(&text), line);
            }
            Event::Alias(_) => {
                self.place(Some(""), line);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let complex_key = self.is_key_position();
                let map = matches!(ev, Event::MappingStart(..));
                let frame = match self.place(None, line) {
                    _ if complex_key => Frame::Skip,
                    None => Frame::Skip,
                    Some(path) => {
                        self.lines.entry(path.clone()).or_insert(line);
                        if map {
                            Frame::Map {
                                path,
                                key: None,
                                seen: Default::default(),
                            }
                        } else {
                            Frame::Seq { path, index: 0 }
                        }
                    }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(l: &Located, p: &str) -> Option<usize> {
        l.line(&Path::parse(p).unwrap())
    }

    #[test]
    fn yaml_lines_of_keys_and_items() {
        let text = "workflow: ./w.json\ncases:\n  - name: one\n    expect:\n      output.text: { contains: x }\n  - name: two\n    trigger: {a: 1}\n";
        let l = parse(text, false).unwrap();
        assert_eq!(l.value["cases"][1]["trigger"]["a"], 1);
        assert_eq!(line(&l, "workflow"), Some(1));
        assert_eq!(line(&l, "cases[0]"), Some(3));
        assert_eq!(line(&l, "cases[0].name"), Some(3));
        assert_eq!(line(&l, "cases[0].expect[\"output.text\"]"), Some(5));
        assert_eq!(line(&l, "cases[1]"), Some(6));
        assert_eq!(line(&l, "cases[1].trigger.a"), Some(7));
        assert_eq!(
            line(&l, "cases[1].nothing.here"),
            Some(6),
            "nearest ancestor"
        );
    }

    #[test]
    fn json_lines_and_duplicates() {
        let text = "{\n  \"workflow\": \"w.json\",\n  \"cases\": [\n    {\"name\": \"a\"}\n  ]\n}";
        let l = parse(text, true).unwrap();
        assert_eq!(line(&l, "cases[0].name"), Some(4));
        let e = parse("{\"a\": 1,\n \"a\": 2}", true).unwrap_err();
        assert_eq!(e, (Some(2), "duplicate key 'a'".to_string()));
        let e = parse("a: 1\nb: [\n", false).unwrap_err();
        assert!(e.1.starts_with("invalid YAML"), "{e:?}");
    }

    #[test]
    fn yaml_that_is_no_json_is_refused_at_its_line_as_in_a_workflow_file() {
        // `.nan` became null without a word; a tag was dropped.
        let e = parse("cases:\n  - name: a\n    trigger: { v: .nan }\n", false).unwrap_err();
        assert_eq!(
            e,
            (
                Some(3),
                "invalid YAML: cases[0].trigger.v: .nan is not a number JSON can hold (finite numbers only)"
                    .to_string()
            )
        );
        // A value with no line of its own (inside a list of merges, under a key written as
        // `0x10`) is placed at the nearest one known.
        let e = parse(
            "cases:\n  - name: a\n    trigger:\n      <<:\n        - {k: 1}\n        - {v: .inf}\n",
            false,
        )
        .unwrap_err();
        assert!(matches!(e.0, Some(3..=6)), "{e:?}");
        let e = parse("cases:\n  - name: a\n    trigger: {0x10: .nan}\n", false).unwrap_err();
        assert_eq!(e.0, Some(3), "{e:?}");
        let e = parse("cases:\n  - !case { name: a }\n", false).unwrap_err();
        assert_eq!(e.0, Some(2), "{e:?}");
        assert!(e.1.contains("YAML tags such as `!case`"), "{e:?}");
    }

    #[test]
    fn merges_and_anchors() {
        let text = "x-mocks: &m\n  ask: {content: hi}\ncases:\n  - name: a\n    mock:\n      <<: *m\n      other: 1\n";
        let l = parse(text, false).unwrap();
        assert_eq!(l.value["cases"][0]["mock"]["ask"]["content"], "hi");
        assert_eq!(
            line(&l, "cases[0].mock.ask"),
            Some(5),
            "from the merge: the parent's line"
        );
        assert_eq!(line(&l, "cases[0].mock.other"), Some(7));
    }
}

//! Paths into JSON values, as test files write them: `output.text`, `nodes.ask.output.usage`,
//! `output.items[0].name`, `output["a key.with dots"]` — the syntax of templates.

use serde_json::Value;
use std::fmt;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A parsed path (never empty once parsed from text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path(pub Vec<Seg>);

impl Path {
    /// Parses `a.b[0]["c d"]`.
    pub fn parse(text: &str) -> Result<Path, String> {
        let b = text.as_bytes();
        let mut segs = Vec::new();
        let mut i = 0;
        let bad = |why: &str| Err(format!("'{text}' is not a valid path: {why}"));
        if text.is_empty() {
            return bad("it is empty");
        }
        while i < b.len() {
            match b[i] {
                b'[' => {
                    let Some(end) = find_close(text, i) else {
                        return bad("a '[' is not closed");
                    };
                    let inner = &text[i + 1..end];
                    if inner.starts_with('"') {
                        match serde_json::from_str::<String>(inner) {
                            Ok(k) => segs.push(Seg::Key(k)),
                            Err(_) => return bad("a quoted key is not a JSON string"),
                        }
                    } else {
                        match inner.parse::<usize>() {
                            Ok(n) => segs.push(Seg::Index(n)),
                            Err(_) => return bad("[…] holds an index (0, 1, …) or a quoted key"),
                        }
                    }
                    i = end + 1;
                    if i < b.len() && b[i] == b'.' {
                        i += 1;
                        if i == b.len() {
                            return bad("it ends with '.'");
                        }
                    } else if i < b.len() && b[i] != b'[' {
                        return bad("expected '.' or '[' after ']'");
                    }
                }
                b'.' => return bad("an empty key between dots"),
                _ => {
                    let start = i;
                    while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        i += 1;
                    }
                    segs.push(Seg::Key(text[start..i].to_string()));
                    if i < b.len() && b[i] == b'.' {
                        i += 1;
                        if i == b.len() {
                            return bad("it ends with '.'");
                        }
                    }
                }
            }
        }
        Ok(Path(segs))
    }

    /// The value at this path, if there is one.
    pub fn get<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for seg in &self.0 {
            v = match (seg, v) {
                (Seg::Key(k), Value::Object(m)) => m.get(k)?,
                (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Why this path finds nothing in `v`: the first step that fails, and what is there
    /// instead (the keys an object has, how long a list is, the type of a value). `None` when
    /// the path finds a value.
    pub fn why_missing(&self, mut v: &Value) -> Option<String> {
        const KEYS_SHOWN: usize = 20;
        for (i, seg) in self.0.iter().enumerate() {
            let at = if i == 0 {
                "the record".to_string()
            } else {
                format!("`{}`", Path(self.0[..i].to_vec()))
            };
            v = match (seg, v) {
                (Seg::Key(k), Value::Object(m)) => match m.get(k) {
                    Some(next) => next,
                    None => {
                        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
                        let more = keys.len().saturating_sub(KEYS_SHOWN);
                        keys.truncate(KEYS_SHOWN);
                        let more = if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        };
                        return Some(if keys.is_empty() {
                            format!("{at} is an empty object")
                        } else {
                            format!("{at} has no '{k}'; it has {}{more}", keys.join(", "))
                        });
                    }
                },
                (Seg::Index(n), Value::Array(a)) => match a.get(*n) {
                    Some(next) => next,
                    None => return Some(format!("{at} has {} item(s), no [{n}]", a.len())),
                },
                (seg, other) => {
                    let kind = flowrun_codegen::value_kind(other);
                    let wanted = match seg {
                        Seg::Key(_) => "an object",
                        Seg::Index(_) => "a list",
                    };
                    return Some(format!("{at} is {kind}, not {wanted}"));
                }
            };
        }
        None
    }

    /// The value at this path, for replacing; `None` when the path does not exist.
    pub fn get_mut<'a>(&self, mut v: &'a mut Value) -> Option<&'a mut Value> {
        for seg in &self.0 {
            v = match (seg, v) {
                (Seg::Key(k), Value::Object(m)) => m.get_mut(k)?,
                (Seg::Index(i), Value::Array(a)) => a.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    pub fn child(&self, seg: Seg) -> Path {
        let mut p = self.clone();
        p.0.push(seg);
        p
    }

    pub fn key(&self, k: &str) -> Path {
        self.child(Seg::Key(k.to_string()))
    }

    pub fn first_key(&self) -> Option<&str> {
        self.key_at(0)
    }

    /// The key of the `i`th step, when that step is a key (not an index).
    pub fn key_at(&self, i: usize) -> Option<&str> {
        match self.0.get(i) {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }
}

/// The `]` closing the `[` at `open`, skipping a quoted key's characters.
fn find_close(text: &str, open: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = open + 1;
    if b.get(i) == Some(&b'"') {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => {
                    i += 1;
                    break;
                }
                _ => i += 1,
            }
        }
    }
    text[i.min(text.len())..].find(']').map(|j| i + j)
}

/// A key that can be written bare in a path.
fn bare(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if bare(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{}]", Value::String(k.clone()))?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_finds_nothing_says_where_it_stopped_and_what_is_there() {
        let record = serde_json::json!({"status": "success",
            "output": {"message": "hi", "length": 2, "items": [1, 2], "body": "text"}});
        let why = |p: &str| Path::parse(p).unwrap().why_missing(&record);
        assert_eq!(why("output.message"), None);
        assert_eq!(
            why("output.mesage").as_deref(),
            Some("`output` has no 'mesage'; it has message, length, items, body")
        );
        assert_eq!(
            why("outptu").as_deref(),
            Some("the record has no 'outptu'; it has status, output")
        );
        assert_eq!(
            why("output.items[5]").as_deref(),
            Some("`output.items` has 2 item(s), no [5]")
        );
        assert_eq!(
            why("output.body.x").as_deref(),
            Some("`output.body` is a string, not an object")
        );
        let many: serde_json::Map<String, Value> =
            (0..25).map(|i| (format!("k{i:02}"), Value::Null)).collect();
        let text = Path::parse("x")
            .unwrap()
            .why_missing(&Value::Object(many))
            .unwrap();
        assert!(text.ends_with("k19 and 5 more"), "{text}");
    }
    use serde_json::json;

    #[test]
    fn paths_parse_and_print_back() {
        for text in [
            "status",
            "output.text",
            "nodes.my-node.output.items[0].name",
            "output[\"a key.with dots\"].x",
            "output[2][3]",
        ] {
            let p = Path::parse(text).unwrap();
            assert_eq!(p.to_string(), text);
        }
        let p = Path::parse("a[1][\"b]c\"]").unwrap();
        assert_eq!(
            p.0,
            vec![Seg::Key("a".into()), Seg::Index(1), Seg::Key("b]c".into())]
        );
        for bad in ["", "a.", ".a", "a..b", "a[x]", "a[1", "a[1]b"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lookup() {
        let v = json!({"a": [{"b": 1}], "c d": null});
        assert_eq!(Path::parse("a[0].b").unwrap().get(&v), Some(&json!(1)));
        assert_eq!(
            Path::parse("[\"c d\"]").unwrap().get(&v),
            Some(&Value::Null)
        );
        assert_eq!(Path::parse("a[1]").unwrap().get(&v), None);
        assert_eq!(Path::parse("a.b").unwrap().get(&v), None);
    }
}

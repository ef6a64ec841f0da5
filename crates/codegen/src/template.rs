//! Templates between nodes: `{{ trigger.x }}`, `{{ nodes.fetch.output.items[0].name }}`,
//! `{{ execution.id }}`.
//!
//! Templates are parsed here, once, at codegen time. The generated script receives them already
//! parsed, as data (`_T(...)`/`_R(...)` in [`crate::pyliteral`]), so the runtime never parses user
//! text and the grammar validation checks is exactly the one that runs.

use std::fmt;

/// A parsed template string: literal text and references, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Ref(Reference),
}

/// A path into the data a node can see.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub path: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(i64),
}

/// The roots a reference may start at.
pub(crate) const ROOTS: &[&str] = &["trigger", "nodes", "execution"];
/// What `nodes.<id>.` may be followed by.
pub(crate) const NODE_FIELDS: &[&str] = &["output", "error", "status"];
/// The keys of `execution`.
pub(crate) const EXECUTION_KEYS: &[&str] = &["id", "mode", "workflow_id"];

impl Template {
    /// True when the string has no `{{` at all: it is emitted as a plain string.
    pub(crate) fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    pub(crate) fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        })
    }
}

impl Reference {
    /// For `nodes.<id>...`, the node id.
    pub(crate) fn node_id(&self) -> Option<&str> {
        match self.path.as_slice() {
            [Segment::Key(root), Segment::Key(id), ..] if root == "nodes" => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.path.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{}]", serde_json::Value::String(k.clone()))?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A template that does not parse: what is wrong and where in the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

/// Parses a template string. `{{` always opens an expression; `}}` outside one is plain text.
pub(crate) fn parse(s: &str) -> Result<Template, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = s;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let expr_start = open + 2;
        let close = find_close(&rest[expr_start..]).ok_or_else(|| TemplateError {
            offset: offset + open,
            message: "`{{` is not closed by `}}`".into(),
        })?;
        let expr = &rest[expr_start..expr_start + close];
        let reference = parse_reference(expr).map_err(|(at, message)| TemplateError {
            offset: offset + expr_start + at,
            message,
        })?;
        parts.push(Part::Ref(reference));
        let consumed = expr_start + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(Template { parts })
}

/// Position of the `}}` closing an expression, skipping quoted keys.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                } else if b == b'}' && bytes.get(i + 1) == Some(&b'}') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// `root(.key | [index] | ["key"])*`, surrounded by optional whitespace.
fn parse_reference(expr: &str) -> Result<Reference, (usize, String)> {
    let chars: Vec<(usize, char)> = expr.char_indices().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].1.is_whitespace() {
            *i += 1;
        }
    };
    let at = |i: usize| chars.get(i).map(|c| c.0).unwrap_or(expr.len());
    let key = |i: &mut usize| -> String {
        let mut k = String::new();
        while *i < chars.len()
            && (chars[*i].1.is_ascii_alphanumeric() || chars[*i].1 == '_' || chars[*i].1 == '-')
        {
            k.push(chars[*i].1);
            *i += 1;
        }
        k
    };
    skip_ws(&mut i);
    if i >= chars.len() {
        return Err((
            at(i),
            "empty `{{ }}`: expected a path such as `trigger.name`".into(),
        ));
    }
    let root = key(&mut i);
    if root.is_empty() {
        return Err((
            at(i),
            format!("expected a path starting with one of {}", ROOTS.join(", ")),
        ));
    }
    let mut path = vec![Segment::Key(root)];
    loop {
        if i >= chars.len() {
            break;
        }
        match chars[i].1 {
            '.' => {
                i += 1;
                let k = key(&mut i);
                if k.is_empty() {
                    return Err((at(i), "expected a key after `.`".into()));
                }
                path.push(Segment::Key(k));
            }
            '[' => {
                i += 1;
                skip_ws(&mut i);
                let c = chars.get(i).map(|c| c.1);
                match c {
                    Some('"') | Some('\'') => {
                        let q = c.unwrap();
                        i += 1;
                        let mut k = String::new();
                        loop {
                            match chars.get(i).map(|c| c.1) {
                                None => return Err((at(i), "unterminated quoted key".into())),
                                Some('\\') => {
                                    if let Some(&(_, n)) = chars.get(i + 1) {
                                        k.push(n);
                                    }
                                    i += 2;
                                }
                                Some(ch) if ch == q => {
                                    i += 1;
                                    break;
                                }
                                Some(ch) => {
                                    k.push(ch);
                                    i += 1;
                                }
                            }
                        }
                        path.push(Segment::Key(k));
                    }
                    Some(ch) if ch.is_ascii_digit() || ch == '-' => {
                        let start = i;
                        i += 1;
                        while i < chars.len() && chars[i].1.is_ascii_digit() {
                            i += 1;
                        }
                        let text: String = chars[start..i].iter().map(|c| c.1).collect();
                        let n: i64 = text
                            .parse()
                            .map_err(|_| (at(start), format!("invalid index `{text}`")))?;
                        path.push(Segment::Index(n));
                    }
                    _ => return Err((at(i), "expected a number or a quoted key after `[`".into())),
                }
                skip_ws(&mut i);
                if chars.get(i).map(|c| c.1) != Some(']') {
                    return Err((at(i), "expected `]`".into()));
                }
                i += 1;
            }
            c if c.is_whitespace() => {
                skip_ws(&mut i);
                if i < chars.len() {
                    return Err((
                        at(i),
                        "only a path is allowed inside `{{ }}` (no operators or filters)".into(),
                    ));
                }
            }
            c => {
                return Err((
                    at(i),
                    format!("unexpected `{c}`: only a path is allowed inside `{{{{ }}}}`"),
                ));
            }
        }
    }
    Ok(Reference { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(s: &str) -> Vec<String> {
        parse(s)
            .unwrap()
            .references()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn parses_paths() {
        assert_eq!(refs("{{ trigger.name }}"), ["trigger.name"]);
        assert_eq!(
            refs("a {{nodes.fetch.output.items[0].b}} c"),
            ["nodes.fetch.output.items[0].b"]
        );
        assert_eq!(refs("{{ trigger[\"a b\"] }}"), ["trigger[\"a b\"]"]);
        assert_eq!(refs("{{ nodes.my-node.output }}"), ["nodes.my-node.output"]);
        assert!(parse("plain }} text").unwrap().is_literal());
    }

    #[test]
    fn whole_string_is_one_part() {
        let t = parse("{{ trigger.n }}").unwrap();
        assert_eq!(t.parts.len(), 1);
        let t = parse(" {{ trigger.n }}").unwrap();
        assert_eq!(t.parts.len(), 2);
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "{{ }}",
            "{{ trigger.a + 1 }}",
            "{{ trigger.a | upper }}",
            "{{ trigger.",
            "{{ trigger[x] }}",
            "{{ a..b }}",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn quoted_braces_inside_keys() {
        assert_eq!(refs("{{ trigger[\"}}\"] }}"), ["trigger[\"}}\"]"]);
    }
}

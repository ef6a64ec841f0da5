//! Finds the line (and, in JSON, the column) of a place in a workflow file.
//!
//! Parsing goes through plain data (`serde_json::Value`), which keeps no positions; diagnostics
//! name a place by node (its position in `nodes`, and its id) and field path (`retry.factor`,
//! `after[1]`), and this module finds it in the text:
//!
//! - JSON (and YAML written in JSON's style) is scanned once into a map from every key's and
//!   array item's path to its line and column: exact, whatever the layout.
//! - YAML in block style: the `nodes` items are found by their `- ` at the items' indentation,
//!   so the n-th node is found even when two nodes share an id, and the field is the first line
//!   of that key inside the node's lines (then the next path part after it, and so on). A field
//!   that came from a merge key (`<<: *defaults`) is not written in the node: its line is the
//!   node's (or the `<<`'s).
//!
//! When nothing is found the message still names node and field.

use crate::source::Format;
use std::collections::HashMap;

/// One step of a path into the data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `retry.max_attempts`, `after[1]`, `fields.v` → path steps.
pub(crate) fn parse_path(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(n) = rest[1..end].parse() {
                out.push(Seg::Index(n));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// Path steps → `retry.max_attempts`, `after[1]`.
pub fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

pub(crate) struct Locator<'a> {
    lines: Vec<&'a str>,
    /// Exact positions (1-based line, column) by path, when the text is JSON.
    json: Option<HashMap<Vec<Seg>, (usize, usize)>>,
    /// The first line (0-based) of each `nodes` item, in block YAML.
    node_starts: Option<(Vec<usize>, usize)>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str, format: Format) -> Self {
        let json = match format {
            Format::Json => Some(json_positions(text)),
            // YAML written as JSON (flow style from the first character).
            Format::Yaml if text.trim_start().starts_with('{') => {
                serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .ok()
                    .map(|_| json_positions(text))
            }
            Format::Yaml => None,
        };
        let lines: Vec<&str> = text.lines().collect();
        let node_starts = if json.is_none() {
            yaml_node_starts(&lines)
        } else {
            None
        };
        Locator {
            lines,
            json,
            node_starts,
        }
    }

    /// 1-based line and column of a place: the node at `index` in `nodes` (or, when its position
    /// is not known, the node whose id is `node`), and the field path inside it (or at the top).
    pub(crate) fn find(
        &self,
        index: Option<usize>,
        node: Option<&str>,
        field: Option<&str>,
    ) -> Option<(usize, Option<usize>)> {
        let field = field.map(parse_path).unwrap_or_default();
        if let Some(map) = &self.json {
            let mut path = Vec::new();
            if node.is_some() || index.is_some() {
                path.push(Seg::Key("nodes".into()));
                path.push(Seg::Index(
                    index.or_else(|| self.json_index_of(map, node?))?,
                ));
            }
            path.extend(field);
            // The longest prefix of the path that is written in the file.
            return (1..=path.len())
                .rev()
                .find_map(|n| map.get(&path[..n]))
                .map(|&(l, c)| (l, Some(c)));
        }
        let (begin, end) = match (index, node) {
            (None, None) => {
                let Some(Seg::Key(top)) = field.first() else {
                    return None;
                };
                let begin = self
                    .lines
                    .iter()
                    .position(|l| !l.starts_with([' ', '\t']) && key_value(l, top).is_some())?;
                let end = (begin + 1..self.lines.len())
                    .find(|&i| is_top_level_line(self.lines[i]))
                    .unwrap_or(self.lines.len());
                return Some((self.walk(begin, end, &field[1..]) + 1, None));
            }
            _ => self.node_region(index, node)?,
        };
        Some((self.walk(begin, end, &field) + 1, None))
    }

    /// The lines `[begin, end)` of a node.
    fn node_region(&self, index: Option<usize>, node: Option<&str>) -> Option<(usize, usize)> {
        if let (Some(k), Some((starts, end))) = (index, &self.node_starts) {
            if let Some(&begin) = starts.get(k) {
                return Some((begin, starts.get(k + 1).copied().unwrap_or(*end)));
            }
        }
        // By id: the first line `id: <node>` after `nodes`, up to the next `id` as shallow or a
        // line less indented.
        let node = node?;
        let nodes = self
            .lines
            .iter()
            .position(|l| key_value(l, "nodes").is_some())?;
        let at = (nodes..self.lines.len()).find(|&i| {
            key_value(self.lines[i], "id")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == node)
        })?;
        let base = indent_of_item(self.lines[at]);
        let end = (at + 1..self.lines.len())
            .find(|&i| {
                let l = self.lines[i];
                let n = indent_of_item(l);
                !l.trim().is_empty() && (n < base || (n == base && key_value(l, "id").is_some()))
            })
            .unwrap_or(self.lines.len());
        Some((at, end))
    }

    /// From line `begin`, the line of each key of `path` in turn (the first after the previous
    /// one, before `end`); the last one found.
    fn walk(&self, begin: usize, end: usize, path: &[Seg]) -> usize {
        let mut at = begin;
        for seg in path {
            let Seg::Key(key) = seg else { continue };
            match (at..end).find(|&i| key_value(self.lines[i], key).is_some()) {
                Some(i) => at = i,
                None => break,
            }
        }
        at
    }

    /// The position in `nodes` of the node whose text holds this place (1-based line, column).
    pub(crate) fn node_at_line(&self, line: usize, column: usize) -> Option<usize> {
        if let Some(map) = &self.json {
            // The last key or item that starts at or before the place.
            let (path, _) = map
                .iter()
                .filter(|&(_, &p)| p <= (line, column))
                .max_by_key(|&(_, &p)| p)?;
            return match path.as_slice() {
                [Seg::Key(nodes), Seg::Index(k), ..] if nodes == "nodes" => Some(*k),
                _ => None,
            };
        }
        let (starts, end) = self.node_starts.as_ref()?;
        let l = line.checked_sub(1)?;
        if l >= *end {
            return None;
        }
        starts.iter().rposition(|&s| s <= l)
    }

    /// The id written in the node at position `k` of `nodes`, if it is a plain string.
    pub(crate) fn node_id(&self, k: usize) -> Option<String> {
        if let Some(map) = &self.json {
            let &(line, col) = map.get(
                &[
                    Seg::Key("nodes".into()),
                    Seg::Index(k),
                    Seg::Key("id".into()),
                ][..],
            )?;
            return self.json_string_after_key(line, col).map(String::from);
        }
        let (begin, end) = self.node_region(Some(k), None)?;
        (begin..end).find_map(|i| {
            key_value(self.lines[i], "id").map(|v| {
                let v = v.split(" #").next().unwrap_or(v).trim();
                v.trim_matches(['"', '\'']).to_string()
            })
        })
    }

    /// The string value after the key whose quote is at (line, col), when it is on that line
    /// and has no escapes.
    fn json_string_after_key(&self, line: usize, col: usize) -> Option<&str> {
        let l = self.lines.get(line - 1)?;
        let at = l.char_indices().nth(col - 1)?.0;
        let rest = &l[at + 1..];
        let rest = &rest[rest.find('"')? + 1..];
        let value = rest.trim_start().strip_prefix(':')?.trim_start();
        let value = value.strip_prefix('"')?;
        let end = value.find(['"', '\\'])?;
        (value.as_bytes()[end] == b'"').then(|| &value[..end])
    }

    fn json_index_of(&self, map: &HashMap<Vec<Seg>, (usize, usize)>, node: &str) -> Option<usize> {
        // The first node whose `id` is `node`.
        let item = |k: usize| vec![Seg::Key("nodes".into()), Seg::Index(k)];
        (0..)
            .take_while(|&k| map.contains_key(&item(k)))
            .find(|&k| {
                let mut id = item(k);
                id.push(Seg::Key("id".into()));
                map.get(&id)
                    .is_some_and(|&(line, col)| self.json_string_after_key(line, col) == Some(node))
            })
    }
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// The indentation of a line's content after its `- ` markers.
fn indent_of_item(l: &str) -> usize {
    let mut t = l.trim_start();
    let mut n = indent(l);
    while let Some(rest) = t.strip_prefix("- ") {
        n += 2 + (rest.len() - rest.trim_start().len());
        t = rest.trim_start();
    }
    if t == "-" { n + 1 } else { n }
}

fn is_top_level_line(l: &str) -> bool {
    !l.is_empty() && !l.starts_with([' ', '\t', '#', '-']) && l.contains(':')
}

/// The text after `key:` if this YAML line holds that key (after optional `- ` markers).
fn key_value<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let mut t = line.trim_start();
    while let Some(rest) = t.strip_prefix('-') {
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            break;
        }
        t = rest.trim_start();
    }
    let (t, quote) = match t.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) => (&t[1..], Some(*q as char)),
        _ => (t, None),
    };
    let rest = t.strip_prefix(key)?;
    let rest = match quote {
        Some(q) => rest.strip_prefix(q)?,
        None => rest,
    };
    let rest = rest.trim_start().strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

/// The first line (0-based) of each item of a block sequence under the top-level `nodes:`, and
/// the line after the last.
fn yaml_node_starts(lines: &[&str]) -> Option<(Vec<usize>, usize)> {
    let nodes = lines
        .iter()
        .position(|l| !l.starts_with([' ', '\t']) && key_value(l, "nodes").is_some())?;
    let content = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let first = (nodes + 1..lines.len()).find(|&i| content(lines[i]))?;
    let item_indent = indent(lines[first]);
    let is_item = |l: &str| {
        indent(l) == item_indent && {
            let t = l.trim_start();
            t == "-" || t.starts_with("- ") || t.starts_with("-\t")
        }
    };
    if !is_item(lines[first]) {
        return None;
    }
    let mut starts = vec![first];
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate().skip(first + 1) {
        if !content(l) {
            continue;
        }
        if is_item(l) {
            starts.push(i);
        } else if indent(l) <= item_indent {
            end = i;
            break;
        }
    }
    Some((starts, end))
}

/// Every key's and array item's path in JSON text, with its 1-based line and column (the key's
/// opening quote; the item's first character). The text must be valid JSON.
fn json_positions(text: &str) -> HashMap<Vec<Seg>, (usize, usize)> {
    struct Frame {
        array: bool,
        n: usize,
        pushed: bool,
    }
    let b = text.as_bytes();
    let mut map = HashMap::new();
    let mut path: Vec<Seg> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let (mut i, mut line) = (0, 1);
    // The column of byte `i`, counted in characters, advanced as `i` moves on.
    let (mut col_at, mut col) = (0, 1);
    while i < b.len() {
        let c = b[i];
        col += text[col_at..i].chars().count();
        col_at = i;
        let pos = (line, col);
        match c {
            b'\n' => {
                line += 1;
                i += 1;
                (col_at, col) = (i, 1);
                continue;
            }
            b' ' | b'\t' | b'\r' | b':' => {
                i += 1;
                continue;
            }
            b',' | b']' | b'}' => {
                if let Some(f) = stack.last_mut() {
                    if f.pushed {
                        path.pop();
                        f.pushed = false;
                    }
                    if c == b',' {
                        f.n += 1;
                    } else {
                        stack.pop();
                    }
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        if let Some(f) = stack.last_mut() {
            if f.array && !f.pushed {
                path.push(Seg::Index(f.n));
                f.pushed = true;
                map.insert(path.clone(), pos);
            }
        }
        match c {
            b'{' | b'[' => {
                stack.push(Frame {
                    array: c == b'[',
                    n: 0,
                    pushed: false,
                });
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                if let Some(f) = stack.last_mut() {
                    if !f.array && !f.pushed {
                        let raw = &text[start..i.min(b.len())];
                        let key = serde_json::from_str::<String>(raw).unwrap_or_default();
                        path.push(Seg::Key(key));
                        f.pushed = true;
                        map.insert(path.clone(), pos);
                    }
                }
            }
            _ => {
                while i < b.len()
                    && !matches!(b[i], b',' | b']' | b'}' | b' ' | b'\n' | b'\t' | b'\r')
                {
                    i += 1;
                }
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for p in [
            "retry.max_attempts",
            "after[1]",
            "fields.v",
            "a[0][2].b",
            "id",
        ] {
            assert_eq!(path_text(&parse_path(p)), p);
        }
    }

    #[test]
    fn json_positions_are_exact() {
        let text = "{\"id\": \"w\",\n \"nodes\": [\n  {\"id\": \"a\", \"after\": [\"x\",\n   \"y\"]},\n  {\"id\": \"a\"}]}";
        let loc = Locator::new(text, Format::Json);
        assert_eq!(loc.find(None, None, Some("id")), Some((1, Some(2))));
        assert_eq!(loc.find(Some(1), Some("a"), Some("id")), Some((5, Some(4))));
        assert_eq!(
            loc.find(Some(0), None, Some("after[1]")),
            Some((4, Some(4)))
        );
        // A field not written in the node: the node's line.
        assert_eq!(loc.find(Some(1), None, Some("type")), Some((5, Some(3))));
        // By id alone: the first node with it.
        assert_eq!(loc.find(None, Some("a"), Some("id")), Some((3, Some(4))));
    }

    #[test]
    fn yaml_nodes_by_position() {
        let text = "id: w\nx-d: &d\n  retry: {max_attempts: 2}\nnodes:\n- id: a\n  type: set\n  fields:\n    v: 1\n-\n  type: set\n  <<: *d\n  id: a\n  fields: {v: 2}\nafter: 1\n";
        let loc = Locator::new(text, Format::Yaml);
        assert_eq!(loc.find(Some(1), Some("a"), Some("id")), Some((12, None)));
        assert_eq!(
            loc.find(Some(0), Some("a"), Some("fields.v")),
            Some((8, None))
        );
        assert_eq!(loc.find(Some(1), None, Some("fields.v")), Some((13, None)));
        // From a merge: the node's first line.
        assert_eq!(loc.find(Some(1), None, Some("retry")), Some((9, None)));
        assert_eq!(loc.find(None, None, Some("after")), Some((14, None)));
        assert_eq!(loc.find(None, None, Some("id")), Some((1, None)));
    }
}

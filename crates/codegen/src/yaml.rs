//! YAML as people write it: merge keys (`<<: *defaults`), and a quick refusal of hostile nesting.
//!
//! The text is parsed by serde_yaml_ng into its own `Value` (which refuses duplicate keys, with
//! line and column), merge keys are applied, and the result becomes the JSON data the rest of
//! codegen works on. Lines of later errors are found in the text by [`crate::locate`], so merging
//! does not move them.

use serde_json::{Map, Number, Value};
use serde_yaml_ng::Value as Yaml;

/// How deep collections may nest, in YAML and JSON alike: the limit both parsers apply (serde_json
/// and serde_yaml_ng refuse more than 128 levels).
pub(crate) const MAX_DEPTH: usize = 128;

/// The message for nesting past [`MAX_DEPTH`].
pub(crate) fn too_deep() -> String {
    format!("nesting is deeper than {MAX_DEPTH} levels, flowrun's limit")
}

/// Finds the first `[` or `{` of a YAML flow collection nested deeper than `limit`, as 1-based
/// line and column, in one pass over the text.
///
/// libyaml (under serde_yaml_ng) takes time quadratic in the depth of flow collections: a few
/// megabytes of `[` take minutes before its own depth limit refuses them. This scan refuses such
/// text first. It follows YAML's lexical rules far enough to count only the brackets that open
/// flow collections: not those inside quoted scalars, comments, block scalars (`|`, `>`) or plain
/// scalars in block context (`code: x[0]`).
pub(crate) fn flow_too_deep(text: &str, limit: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let mut depth = 0usize;
    // Block scalar: lines blank or indented more than this column belong to it.
    let mut block_scalar: Option<usize> = None;
    // Block context: the column of the key or `-` that owns the next value.
    let mut owner = 0usize;
    // Block context: is the next token the start of a value (where `[`/`{`/`|`/quotes open one)?
    let mut value_start = true;
    let blank = |c: u8| c == b' ' || c == b'\t';
    let ends_token = |j: usize| j >= b.len() || matches!(b[j], b' ' | b'\t' | b'\r' | b'\n');
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            i += 1;
            line += 1;
            line_start = i;
            if depth == 0 {
                value_start = true;
                // Skip the lines of a block scalar.
                if let Some(col) = block_scalar {
                    let mut j = i;
                    while j < b.len() && blank(b[j]) {
                        j += 1;
                    }
                    if j >= b.len() || matches!(b[j], b'\n' | b'\r') || j - i > col {
                        while i < b.len() && b[i] != b'\n' {
                            i += 1;
                        }
                        continue;
                    }
                    block_scalar = None;
                }
                let mut j = i;
                while j < b.len() && blank(b[j]) {
                    j += 1;
                }
                owner = j - i;
            }
            continue;
        }
        let col = i - line_start;
        // A quoted scalar, in either context: skip it (it may span lines).
        if c == b'"' || c == b'\'' {
            if depth == 0 && !value_start {
                i = skip_to_line_end(b, i);
                continue;
            }
            i += 1;
            while i < b.len() {
                match b[i] {
                    b'\\' if c == b'"' => i += 1,
                    b'\'' if c == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
                    q if q == c => break,
                    b'\n' => {
                        line += 1;
                        line_start = i + 1;
                    }
                    _ => {}
                }
                i += 1;
            }
            i += 1;
            value_start = false;
            continue;
        }
        if c == b'#' && (i == line_start || blank(b[i - 1])) {
            i = skip_to_line_end(b, i);
            continue;
        }
        if depth > 0 {
            match c {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limit {
                        return Some((line, col + 1));
                    }
                }
                b']' | b'}' => {
                    depth -= 1;
                    value_start = false;
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        // Block context.
        match c {
            b' ' | b'\t' | b'\r' => i += 1,
            b'[' | b'{' if value_start => {
                depth = 1;
                if depth > limit {
                    return Some((line, col + 1));
                }
                i += 1;
            }
            b'-' | b'?' | b':' if ends_token(i + 1) => {
                if c == b'-' {
                    owner = col;
                }
                value_start = true;
                i += 1;
            }
            b'|' | b'>' if value_start => {
                block_scalar = Some(owner);
                i = skip_to_line_end(b, i);
            }
            b'&' | b'!' if value_start => {
                // An anchor or a tag before the value.
                while !ends_token(i) {
                    i += 1;
                }
            }
            b'*' if value_start => {
                while !ends_token(i) {
                    i += 1;
                }
                value_start = false;
            }
            _ => {
                // A plain scalar: a key if `: ` follows on this line, else text to the line's end.
                if value_start {
                    owner = col;
                }
                value_start = false;
                while i < b.len() && b[i] != b'\n' {
                    if b[i] == b':' && ends_token(i + 1) {
                        break;
                    }
                    if b[i] == b'#' && blank(b[i - 1]) {
                        break;
                    }
                    i += 1;
                }
            }
        }
    }
    None
}

fn skip_to_line_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// A problem found after parsing: the message and the path of the place (`nodes[2].fields`),
/// for [`crate::locate`] to find its line.
pub(crate) struct PathError {
    pub path: Vec<crate::locate::Seg>,
    pub message: String,
}

/// YAML data as JSON, as a workflow file's is read (see [`to_json`]), for other files flowrun
/// reads the same way (test files): on error, the path to the value at fault and what is wrong.
pub fn yaml_to_json(v: Yaml) -> Result<Value, (Vec<crate::locate::Seg>, String)> {
    to_json(v, &mut Vec::new()).map_err(|e| (e.path, e.message))
}

/// Applies YAML merge keys and turns the data into JSON.
///
/// `<<: *a` (or `<<: [*a, *b]`) copies the keys of the aliased mappings that the mapping does not
/// set itself, at the place the `<<` is written; with a list, the earlier mapping wins. Merges
/// inside the merged mappings are applied first, so anchors can build on each other. Keys must be
/// strings (integer and boolean keys are written as text, as JSON would); tags are refused.
pub(crate) fn to_json(v: Yaml, path: &mut Vec<crate::locate::Seg>) -> Result<Value, PathError> {
    use crate::locate::Seg;
    let err = |path: &[Seg], message: String| PathError {
        path: path.to_vec(),
        message,
    };
    Ok(match v {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => number(&n).ok_or_else(|| {
            err(
                path,
                format!("{n} is not a number JSON can hold (finite numbers only)"),
            )
        })?,
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                path.push(Seg::Index(i));
                out.push(to_json(item, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            let mut seen = std::collections::HashSet::new();
            // Keys written in the mapping win over merged ones wherever the `<<` sits.
            let mut own = std::collections::HashSet::new();
            for k in m.keys() {
                if let Some(s) = key_text(k) {
                    own.insert(s);
                }
            }
            for (k, item) in m {
                if k.as_str() == Some("<<") {
                    path.push(Seg::Key("<<".into()));
                    let sources = match item {
                        Yaml::Sequence(list) => list,
                        other => vec![other],
                    };
                    for (i, source) in sources.into_iter().enumerate() {
                        let Yaml::Mapping(_) = source else {
                            return Err(err(
                                path,
                                format!(
                                    "`<<` merges mappings (`<<: *name` or `<<: [*a, *b]`); item {} is not a mapping",
                                    i + 1
                                ),
                            ));
                        };
                        let Value::Object(merged) = to_json(source, path)? else {
                            unreachable!("a mapping becomes an object")
                        };
                        for (mk, mv) in merged {
                            if !own.contains(&mk) && !out.contains_key(&mk) {
                                out.insert(mk, mv);
                            }
                        }
                    }
                    path.pop();
                    continue;
                }
                let Some(key) = key_text(&k) else {
                    return Err(err(
                        path,
                        "mapping keys must be strings, numbers or booleans".into(),
                    ));
                };
                path.push(Seg::Key(key.clone()));
                if !seen.insert(key.clone()) {
                    // YAML told them apart (`1` and "1", `true` and "true"); JSON cannot.
                    return Err(err(
                        path,
                        format!(
                            "duplicate key `{key}`: written twice, once as a string and once not (JSON keys are strings)"
                        ),
                    ));
                }
                let value = to_json(item, path)?;
                path.pop();
                // A merged key that came first is overridden by the mapping's own.
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => {
            return Err(err(
                path,
                format!("YAML tags such as `{}` are not supported", t.tag),
            ));
        }
    })
}

fn key_text(k: &Yaml) -> Option<String> {
    match k {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(n: &serde_yaml_ng::Number) -> Option<Value> {
    if let Some(u) = n.as_u64() {
        Some(Value::Number(u.into()))
    } else if let Some(i) = n.as_i64() {
        Some(Value::Number(i.into()))
    } else {
        n.as_f64().and_then(Number::from_f64).map(Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        let y: Yaml = serde_yaml_ng::from_str(text).unwrap();
        to_json(y, &mut Vec::new()).map_err(|e| e.message).unwrap()
    }

    #[test]
    fn merge_keys_are_applied_in_place_and_own_keys_win() {
        let v = json("base: &b {x: 1, y: 2}\nout:\n  a: 0\n  <<: *b\n  y: 3\n");
        assert_eq!(v["out"], serde_json::json!({"a": 0, "x": 1, "y": 3}));
        let keys: Vec<&String> = v["out"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "x", "y"]);
        assert!(!v.to_string().contains("<<"));
    }

    #[test]
    fn merge_lists_and_chained_anchors() {
        let v = json(
            "a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: &c {x: 9, z: 3}\nout: {<<: [*b, *c], w: 0}\n",
        );
        assert_eq!(v["b"], serde_json::json!({"x": 1, "y": 2}));
        // The earlier mapping in the list wins; chained merges leave no `<<` behind.
        assert_eq!(
            v["out"],
            serde_json::json!({"x": 1, "y": 2, "z": 3, "w": 0})
        );
        assert!(!v.to_string().contains("<<"), "{v}");
    }

    #[test]
    fn merging_a_scalar_or_a_tag_is_refused() {
        let y: Yaml = serde_yaml_ng::from_str("a: {<<: 3}").unwrap();
        let e = to_json(y, &mut Vec::new()).err().unwrap();
        assert!(e.message.contains("merges mappings"), "{}", e.message);
        assert_eq!(e.path.len(), 2);
        let y: Yaml = serde_yaml_ng::from_str("a: !foo 1").unwrap();
        let e = to_json(y, &mut Vec::new()).err().unwrap();
        assert!(e.message.contains("tags"), "{}", e.message);
    }

    #[test]
    fn flow_depth_counts_only_flow_collections() {
        let deep = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert_eq!(flow_too_deep(&deep, 128), Some((1, 4 + 128)));
        let ok = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert_eq!(flow_too_deep(&ok, 128), None);
        let brackets = "[".repeat(300);
        for not_flow in [
            format!("code: x{brackets}\n"),
            format!("code: |\n  {brackets}\n  more\nnext: 1\n"),
            format!("- >-\n   {brackets}\n"),
            format!("a: '{brackets}'\nb: \"{brackets}\\\"\"\n"),
            format!("a: 1 # {brackets}\n# {brackets}\n"),
            format!("a: ['{brackets}', \"x\n {brackets}\"]\n"),
        ] {
            assert_eq!(flow_too_deep(&not_flow, 128), None, "{not_flow}");
        }
        // The line after a block scalar is read again.
        let after = format!("code: |\n  x\nb: {}\n", "{".repeat(130));
        assert_eq!(flow_too_deep(&after, 128), Some((3, 4 + 128)));
        let anchored = format!("a: &x {}\n", "[".repeat(130));
        assert!(flow_too_deep(&anchored, 128).is_some());
        let item = format!("- - {}\n", "[".repeat(130));
        assert!(flow_too_deep(&item, 128).is_some());
    }
}

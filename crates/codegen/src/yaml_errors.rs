//! Where a YAML syntax error is, and what it says: the parser's message without its position
//! (the diagnostic carries it), a duplicate key placed on its second occurrence rather than on
//! its mapping's first key, and a hint for a mistake the README's flow-style examples invite.

use crate::diagnostic::Diagnostic;
use crate::yaml::too_deep;
use serde_json::Value;

/// A parser's message without the " at line X column Y" it appends (the diagnostic has them),
/// and with the nesting limit explained.
pub(crate) fn parser_message(msg: &str) -> String {
    let msg = without_places(msg);
    if msg.starts_with("recursion limit exceeded") {
        too_deep()
    } else {
        msg
    }
}

/// `msg` without the ` at line L column C` the parser puts after each of its parts (`did not
/// find expected ',' or ']' at line 4 column 31, while parsing a flow sequence at line 4 column
/// 20`): the diagnostic gives the place once, before the message.
fn without_places(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        let after = &rest[i + " at line ".len()..];
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let line = digits(after);
        let place = after[line..]
            .strip_prefix(" column ")
            .filter(|_| line > 0)
            .map(|c| (c, digits(c)))
            .filter(|(_, n)| *n > 0);
        out.push_str(&rest[..i]);
        match place {
            Some((c, n)) => rest = &c[n..],
            None => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// serde_yaml_ng's error as a diagnostic with line and column.
pub(crate) fn yaml_error(e: &serde_yaml_ng::Error, text: &str) -> Diagnostic {
    let (at, message) = syntax_error(e, text);
    let d = Diagnostic::new(message);
    match at {
        Some((line, column)) => d.at(line, Some(column)),
        None => d,
    }
}

/// serde_yaml_ng's error in `text` as `invalid YAML: …` and where it is (1-based line and
/// column). A duplicate key is placed on its second occurrence, where serde_yaml_ng gives the
/// start of the mapping (its first key): in a long mapping that is another line.
pub fn syntax_error(e: &serde_yaml_ng::Error, text: &str) -> (Option<(usize, usize)>, String) {
    let msg = e.to_string();
    let at = e.location().map(|l| (l.line(), l.column()));
    // `duplicate entry with key "x"`, after the path of the mapping (`expect: `).
    const DUP: &str = "duplicate entry with key ";
    let dup = msg
        .find(DUP)
        .map(|i| &msg[i + DUP.len()..])
        .map(|rest| rest.rfind(" at line ").map_or(rest, |i| &rest[..i]))
        .and_then(|k| serde_json::from_str::<String>(k).ok());
    let at = match (at, dup) {
        (Some((line, column)), Some(key)) => {
            Some(second_key(text, line, column, &key).unwrap_or((line, column)))
        }
        (at, _) => at,
    };
    let mut message = format!("invalid YAML: {}", parser_message(&msg));
    if let Some(hint) = at.and_then(|(line, _)| bracket_in_flow_mapping(text, line)) {
        message.push_str(hint);
    }
    (at, message)
}

/// A hint for the line of a syntax error, for two mistakes YAML's flow style invites: a value
/// that is a template written bare (`v: {{ trigger.items[0] }}`: `{` starts a mapping), and a
/// key with an index in a `{ … }` mapping (`{ nodes.poll.iterations[2].output: true }`: `[`
/// starts a list, so the key ends there). Quoted text is skipped; only a plain key's `x[` counts.
fn bracket_in_flow_mapping(text: &str, line: usize) -> Option<&'static str> {
    let l = text.lines().nth(line.checked_sub(1)?)?.as_bytes();
    let (mut quote, mut in_key, mut prev) = (None::<u8>, false, b' ');
    for (i, &c) in l.iter().enumerate() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'#') if prev == b' ' => break,
            (None, b'{') if l.get(i + 1) == Some(&b'{') => {
                return Some(
                    "; a value that starts with `{{` is a template: quote it (\"{{ … }}\"), \
                     since YAML reads `{` as the start of a mapping",
                );
            }
            (None, b'{' | b',') => in_key = true,
            (None, b':') => in_key = false,
            (None, b'[') if in_key && (prev.is_ascii_alphanumeric() || prev == b'_') => {
                return Some(
                    "; in a `{ … }` mapping `[` starts a list: quote a key that has one \
                     ('nodes.x.items[0].output': …) or write the mapping one key a line",
                );
            }
            _ => {}
        }
        prev = c;
    }
    None
}

/// What follows the `:` when `text` starts with `key` written as a mapping key — plain, in
/// double quotes or in single quotes — then that `:`.
fn after_key<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let forms = [
        key.to_string(),
        Value::String(key.to_string()).to_string(),
        format!("'{}'", key.replace('\'', "''")),
    ];
    forms.iter().find_map(|f| {
        text.strip_prefix(f.as_str())?
            .trim_start_matches([' ', '\t'])
            .strip_prefix(':')
    })
}

/// Where `key` is written the second time in the flow mapping (`{ x: 1, x: 2 }`, on one line or
/// several) whose `{` is at `line` (1-based), `col` (0-based): the keys of its own level, after
/// its `{` or a `,`, quoted strings skipped.
fn second_flow_key(text: &str, line: usize, col: usize, key: &str) -> Option<(usize, usize)> {
    let offset = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum::<usize>()
        + col;
    let rest = text.get(offset..)?;
    let (mut depth, mut seen, mut at_key) = (0usize, 0, false);
    let (mut l, mut c) = (line, col + 1);
    let mut chars = rest.char_indices();
    while let Some((i, ch)) = chars.next() {
        if at_key && !ch.is_whitespace() {
            at_key = false;
            if after_key(&rest[i..], key).is_some() {
                seen += 1;
                if seen == 2 {
                    return Some((l, c));
                }
            }
        }
        match ch {
            '{' | '[' => {
                depth += 1;
                at_key = depth == 1 && ch == '{';
            }
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return None;
                }
            }
            ',' if depth == 1 => at_key = true,
            '"' | '\'' => {
                // Skipped whole: a key or value in quotes holds no structure.
                let mut escaped = false;
                for (_, q) in chars.by_ref() {
                    c += 1;
                    if q == ch && !escaped {
                        break;
                    }
                    escaped = ch == '"' && q == '\\' && !escaped;
                    if q == '\n' {
                        l += 1;
                        c = 0;
                    }
                }
            }
            _ => {}
        }
        if ch == '\n' {
            l += 1;
            c = 1;
        } else {
            c += 1;
        }
    }
    None
}

/// Where `key` is written the second time in the block mapping whose first key is at `line`,
/// `column`: the lines after it whose text at that column starts with the key (plain or quoted)
/// and a `:`, until one is indented less (the mapping has ended). None in flow style.
fn second_key(text: &str, line: usize, column: usize, key: &str) -> Option<(usize, usize)> {
    let indent = column.checked_sub(1)?;
    let start_line = text.lines().nth(line.checked_sub(1)?)?;
    if start_line.get(indent..)?.starts_with('{') {
        return second_flow_key(text, line, indent, key);
    }
    // In block style `key:x` is one plain scalar: the `:` of a key ends it or comes before a space.
    let is_key = |rest: &str| {
        after_key(rest, key).is_some_and(|after| after.is_empty() || after.starts_with([' ', '\t']))
    };
    let mut seen = 0;
    for (i, l) in text.lines().enumerate().skip(line - 1) {
        let body = l.trim_start_matches(' ');
        let first = i + 1 == line;
        if !first && (body.is_empty() || body.starts_with('#')) {
            continue;
        }
        let lead = l.len() - body.len();
        if !first && lead < indent {
            return None;
        }
        // The first key may follow a list item's `- ` (what makes the mapping start there).
        let at_column = lead == indent || first;
        if at_column && l.get(indent..).is_some_and(is_key) {
            seen += 1;
            if seen == 2 {
                return Some((i + 1, column));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_in_the_parsers_message_goes() {
        for (msg, want) in [
            (
                "did not find expected ',' or ']' at line 4 column 31, while parsing a flow sequence at line 4 column 20",
                "did not find expected ',' or ']', while parsing a flow sequence",
            ),
            (
                "mapping values are not allowed in this context at line 2 column 5",
                "mapping values are not allowed in this context",
            ),
            ("a key named at line one", "a key named at line one"),
            ("at line 3 column", "at line 3 column"),
        ] {
            assert_eq!(without_places(msg), want, "{msg}");
        }
    }
    use crate::yaml::to_json;
    use serde_yaml_ng::Value as Yaml;

    /// Where the syntax error in `text` is, and what it says.
    fn at(text: &str) -> (Option<(usize, usize)>, String) {
        let e = serde_yaml_ng::from_str::<Yaml>(text).unwrap_err();
        syntax_error(&e, text)
    }

    /// serde_yaml_ng names the mapping's first key; the error names the key written twice.
    #[test]
    fn a_duplicate_key_is_placed_on_its_second_occurrence() {
        let text = "a: 1\nexpect:\n  x: 1\n  # note\n  y: 2\n\n  x: 3\nz: 0\n";
        let (place, message) = at(text);
        assert_eq!(place, Some((7, 3)), "{message}");
        assert_eq!(
            message,
            "invalid YAML: expect: duplicate entry with key \"x\""
        );
        // In a list item, the first key after its `- `; quoted the second time.
        let text = "cases:\n  - name: one\n    expect: {}\n    \"name\": two\n";
        assert_eq!(at(text).0, Some((4, 5)));
        // A key of a nested mapping with the same name is not the duplicate.
        let text = "n:\n  k: 1\n  sub:\n    k: 2\n  k: 3\n";
        assert_eq!(at(text).0, Some((5, 3)));
        // Flow style, on one line or several: the second one too.
        assert_eq!(at("x: {a: 1, \"b,\": 2, a: 2}\n").0, Some((1, 20)));
        assert_eq!(
            at("x: {\n  a: 1,\n  c: {a: 3},\n  a: 2\n}\n").0,
            Some((4, 3))
        );
        // `1` and "1" are two keys to YAML and one to JSON: refused, not one value dropped.
        let y: Yaml = serde_yaml_ng::from_str("m:\n  1: a\n  \"1\": b\n").unwrap();
        let e = to_json(y, &mut Vec::new()).unwrap_err();
        assert!(e.message.contains("duplicate key `1`"), "{}", e.message);
    }

    /// What a user writes from the README's flow-style `expect:` and a path with an index.
    #[test]
    fn a_key_with_an_index_in_a_flow_mapping_gets_a_hint() {
        let text = "cases:\n  - name: polls\n    expect: { nodes.poll.iterations[2].output.ready: true, output.n: 3 }\n";
        let (place, message) = at(text);
        assert_eq!(place.map(|p| p.0), Some(3), "{message}");
        assert!(
            message.contains("`[` starts a list: quote a key that has one"),
            "{message}"
        );
        // Quoted, it parses; another error on a line without such a key gets no hint.
        let quoted = "expect: { 'nodes.poll.iterations[2].output.ready': true }\n";
        assert!(serde_yaml_ng::from_str::<Yaml>(quoted).is_ok());
        let (_, message) = at("expect: { a: 1, b: [1, 2 }\n");
        assert!(!message.contains("starts a list"), "{message}");
        // An index inside a quoted template value is not a key's.
        let (_, message) = at("values: { v: \"{{ trigger.items[0] }}\", w: [1, 2 }\n");
        assert!(!message.contains("starts a list"), "{message}");
        // A template written bare: the hint is to quote the value.
        let (_, message) = at("fields:\n  v: {{ trigger.items[0] }}\n  w: 1\n");
        assert!(message.contains("is a template: quote it"), "{message}");
    }
}

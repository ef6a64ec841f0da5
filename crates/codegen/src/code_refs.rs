//! The nodes a `code` node reads: `nodes['id']`, `nodes["id"]` and `nodes.get('id')` in its
//! Python source.
//!
//! One pass over the source that knows Python's comments and string literals, so that
//! `# nodes['old']` or `"nodes['x']"` in a message is not a reference, while `nodes['x']` inside
//! an f-string's `{ }` is. Only a constant id is a reference (`nodes[name]` is not).

/// One reference: the id, and the text as written (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeRef<'a> {
    pub id: &'a str,
    pub written: &'a str,
}

/// Every reference in `code`, in order (repeats included).
pub(crate) fn scan(code: &str) -> Vec<CodeRef<'_>> {
    let b = code.as_bytes();
    let mut refs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'\'' {
            i = skip_string(code, i, false, &mut refs);
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &code[start..i];
            let prefix = word.len() <= 2 && word.bytes().all(|c| b"rRbBuUfF".contains(&c));
            if prefix && i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let f = word.contains(['f', 'F']);
                i = skip_string(code, i, f, &mut refs);
            } else if word == "nodes" && !after_dot(b, start) {
                if let Some(r) = reference(code, start, i) {
                    refs.push(r);
                }
            }
        } else if c.is_ascii_digit() {
            // A number, so that `1nodes` stays one token.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    refs
}

/// Is the word at `start` an attribute (`self.nodes`)?
fn after_dot(b: &[u8], start: usize) -> bool {
    b[..start]
        .iter()
        .rev()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|&c| c == b'.')
}

/// Skips the string literal whose quote is at `i`; returns the index after it. In an f-string,
/// references inside are collected.
fn skip_string<'a>(code: &'a str, i: usize, f: bool, refs: &mut Vec<CodeRef<'a>>) -> usize {
    let b = code.as_bytes();
    let q = b[i];
    let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    let body = j;
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j] == q && (!triple || (b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q))) {
            break;
        }
        if !triple && b[j] == b'\n' {
            break;
        }
        j += 1;
    }
    let end = j.min(b.len());
    if f {
        // Expressions inside an f-string: look for `nodes` references in the body as code.
        let inner = &code[body..end];
        let mut from = 0;
        while let Some(at) = inner[from..].find("nodes") {
            let start = body + from + at;
            let word_start = start == 0 || {
                let p = b[start - 1];
                !(p.is_ascii_alphanumeric() || p == b'_' || p == b'.')
            };
            if word_start {
                if let Some(r) = reference(code, start, start + 5) {
                    refs.push(r);
                }
            }
            from += at + 5;
        }
    }
    if j >= b.len() {
        b.len()
    } else if triple {
        j + 3
    } else {
        j + 1
    }
}

/// After the word `nodes` (`start..end`): `[ 'id' ]` or `.get( 'id' ` with a plain literal.
fn reference(code: &str, start: usize, end: usize) -> Option<CodeRef<'_>> {
    let b = code.as_bytes();
    let ws = |mut k: usize| {
        while k < b.len() && (b[k] == b' ' || b[k] == b'\t') {
            k += 1;
        }
        k
    };
    let mut k = ws(end);
    let close = match b.get(k)? {
        b'[' => b']',
        b'.' => {
            k = ws(k + 1);
            if !code[k..].starts_with("get") {
                return None;
            }
            k = ws(k + 3);
            if b.get(k) != Some(&b'(') {
                return None;
            }
            b')'
        }
        _ => return None,
    };
    k = ws(k + 1);
    let q = *b.get(k)?;
    if q != b'\'' && q != b'"' {
        return None;
    }
    let id_start = k + 1;
    let len = code[id_start..].find([q as char, '\\', '\n'])?;
    if b[id_start + len] != q {
        return None;
    }
    let id = &code[id_start..id_start + len];
    k = ws(id_start + len + 1);
    match b.get(k)? {
        &c if c == close => Some(CodeRef {
            id,
            written: &code[start..=k],
        }),
        b',' if close == b')' => Some(CodeRef {
            id,
            written: &code[start..k],
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(code: &str) -> Vec<&str> {
        scan(code).into_iter().map(|r| r.id).collect()
    }

    #[test]
    fn finds_the_three_forms() {
        assert_eq!(
            ids(
                "a = nodes['x']['output']\nb = nodes[\"y\"]\nc = nodes.get('z', {})\nd = nodes.get( \"w\" )"
            ),
            ["x", "y", "z", "w"]
        );
        let r = &scan("v = nodes [ 'x' ] + 1")[0];
        assert_eq!(r.written, "nodes [ 'x' ]");
        assert_eq!(scan("nodes.get('z', 1)")[0].written, "nodes.get('z'");
    }

    #[test]
    fn ignores_comments_strings_attributes_and_variables() {
        assert!(ids("# nodes['old']\nx = 1").is_empty());
        assert!(ids("log(\"see nodes['x']\")").is_empty());
        assert!(ids("s = '''\nnodes['x']\n'''").is_empty());
        assert!(ids("self.nodes['x']").is_empty());
        assert!(ids("mynodes['x']").is_empty());
        assert!(ids("nodes[name]").is_empty());
        assert!(ids("nodes['a' + b]").is_empty());
        assert!(ids("nodes['a\\'b']").is_empty());
        assert!(ids("r'\\'' + 'nodes[\"x\"]'").is_empty());
    }

    #[test]
    fn reads_inside_f_strings() {
        assert_eq!(ids("return f\"{nodes['a']['output']}!\""), ["a"]);
        assert_eq!(ids("return rf'{nodes[\"b\"]}'"), ["b"]);
    }
}

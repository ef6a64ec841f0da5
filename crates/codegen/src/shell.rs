//! Where each `{{ }}` of a `command` run with `shell: true` sits in the shell line, so the
//! runtime can quote its value for that place and the value stays data, never code.
//!
//! Three places are supported, each with its own quoting (`runtime/nodes/command.py`):
//! - a word of its own or part of one, unquoted (also inside `$( … )`): the value becomes one
//!   single-quoted shell word, like Python's `shlex.quote`;
//! - inside `"…"`: `\`, `$`, `` ` `` and `"` in the value are escaped with a backslash;
//! - inside `'…'`: each `'` in the value becomes `'\''`.
//!
//! Everywhere else no quoting is safe or flowrun cannot tell the place for sure — after `\` or
//! `$`, inside backticks, `$'…'`, `${ … }`, arithmetic, a comment, after a here-document, `$[` or a
//! `case` inside `$( … )` — and the workflow is invalid there, with a message that says so.

use crate::template::{Part, Reference, Template};

/// How the runtime quotes one template value in a shell line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quoting {
    Word,
    Double,
    Single,
}

impl Quoting {
    /// The name the runtime reads (`command_quoting` in the node's params).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Quoting::Word => "word",
            Quoting::Double => "double",
            Quoting::Single => "single",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// Unquoted: the line itself, or inside `$( … )` (`subst`); `(` opened here counted.
    Plain {
        subst: bool,
        parens: u32,
    },
    Double,
    Single,
    Backtick,
    AnsiC,
    /// `${ … }`, braces open.
    Brace(u32),
    /// `$(( … ))` or `(( … ))`, parentheses open.
    Arith(u32),
    Comment,
}

impl Ctx {
    /// Why a value cannot go here, or `None` when it can.
    fn refusal(self) -> Option<&'static str> {
        match self {
            Ctx::Plain { .. } | Ctx::Double | Ctx::Single => None,
            Ctx::Backtick => Some("is inside backticks, where no quoting is safe (use `$( … )`)"),
            Ctx::AnsiC => Some("is inside `$'…'`"),
            Ctx::Brace(_) => Some("is inside `${ … }`"),
            Ctx::Arith(_) => Some("is inside arithmetic (`$(( … ))` or `(( … ))`)"),
            Ctx::Comment => Some("is inside a shell comment"),
        }
    }
}

enum Tok<'a> {
    C(char),
    Ref(&'a Reference),
}

/// The quoting of each reference of `t`, in order, or why one or more cannot be quoted.
pub(crate) fn quoting(t: &Template) -> Result<Vec<Quoting>, Vec<String>> {
    let toks: Vec<Tok> = t
        .parts
        .iter()
        .flat_map(|p| match p {
            Part::Text(s) => s.chars().map(Tok::C).collect::<Vec<_>>(),
            Part::Ref(r) => vec![Tok::Ref(r)],
        })
        .collect();
    let ch = |i: usize| match toks.get(i) {
        Some(Tok::C(c)) => Some(*c),
        _ => None,
    };
    let is_ref = |i: usize| matches!(toks.get(i), Some(Tok::Ref(_)));
    let word_start =
        |i: usize| i == 0 || ch(i - 1).is_some_and(|c| c.is_whitespace() || ";&|()<>".contains(c));
    let mut stack = vec![Ctx::Plain {
        subst: false,
        parens: 0,
    }];
    // Set when flowrun can no longer tell where it is: every later value is refused.
    let mut lost: Option<&'static str> = None;
    // Set by the character just before a value that makes any quoting of it unsafe.
    let mut bad_next: Option<&'static str> = None;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let top = *stack.last().expect("the line's own context stays");
        let c = match &toks[i] {
            Tok::Ref(r) => {
                let why = bad_next.take().or(lost).or_else(|| top.refusal());
                match (why, top) {
                    (Some(why), _) => errors.push(format!("{{{{ {r} }}}} {why}")),
                    (None, Ctx::Double) => out.push(Quoting::Double),
                    (None, Ctx::Single) => out.push(Quoting::Single),
                    (None, _) => out.push(Quoting::Word),
                }
                i += 1;
                continue;
            }
            Tok::C(c) => *c,
        };
        let mut step = 1;
        match (top, c) {
            (Ctx::Single, '\'') | (Ctx::Double, '"') | (Ctx::Backtick, '`') => {
                stack.pop();
            }
            (Ctx::AnsiC, '\'') | (Ctx::Comment, '\n') => {
                stack.pop();
            }
            (Ctx::Plain { .. } | Ctx::Double | Ctx::Backtick | Ctx::AnsiC, '\\') => {
                if is_ref(i + 1) {
                    bad_next = Some("follows a backslash, which would undo its quoting");
                } else {
                    step = 2;
                }
            }
            (Ctx::Single | Ctx::Comment | Ctx::Backtick | Ctx::AnsiC, _) => {}
            (Ctx::Plain { .. } | Ctx::Double, '$') => {
                if is_ref(i + 1) {
                    bad_next = Some("follows `$`");
                } else if ch(i + 1) == Some('(') && ch(i + 2) == Some('(') {
                    stack.push(Ctx::Arith(2));
                    step = 3;
                } else if ch(i + 1) == Some('(') {
                    stack.push(Ctx::Plain {
                        subst: true,
                        parens: 0,
                    });
                    step = 2;
                } else if ch(i + 1) == Some('{') {
                    stack.push(Ctx::Brace(1));
                    step = 2;
                } else if ch(i + 1) == Some('[') {
                    lost = lost.or(Some("comes after arithmetic `$[ … ]`"));
                } else if ch(i + 1) == Some('\'') && top != Ctx::Double {
                    stack.push(Ctx::AnsiC);
                    step = 2;
                }
            }
            (Ctx::Plain { .. } | Ctx::Double, '`') => stack.push(Ctx::Backtick),
            (Ctx::Double, _) => {}
            (Ctx::Plain { .. }, '\'') => stack.push(Ctx::Single),
            (Ctx::Plain { .. }, '"') => stack.push(Ctx::Double),
            (Ctx::Plain { .. }, '#') if word_start(i) => stack.push(Ctx::Comment),
            (Ctx::Plain { .. }, '(') if ch(i + 1) == Some('(') && word_start(i) => {
                stack.push(Ctx::Arith(2));
                step = 2;
            }
            (Ctx::Plain { subst, parens }, '(') => {
                *stack.last_mut().unwrap() = Ctx::Plain {
                    subst,
                    parens: parens + 1,
                };
            }
            (Ctx::Plain { subst, parens }, ')') => {
                if parens > 0 {
                    *stack.last_mut().unwrap() = Ctx::Plain {
                        subst,
                        parens: parens - 1,
                    };
                } else if subst {
                    stack.pop();
                }
            }
            (Ctx::Plain { .. }, '<') if ch(i + 1) == Some('<') => {
                if ch(i + 2) == Some('<') {
                    step = 3; // a here-string: its word is an ordinary word
                } else {
                    lost = lost.or(Some(
                        "comes after a here-document (`<<`), whose body flowrun does not follow",
                    ));
                    step = 2;
                }
            }
            (Ctx::Plain { subst: true, .. }, 'c') if word_start(i) && starts_case(&toks, i) => {
                lost = lost.or(Some(
                    "comes after a `case` inside `$( … )`, whose `)` flowrun does not follow",
                ));
            }
            (Ctx::Plain { .. }, _) => {}
            (Ctx::Brace(d) | Ctx::Arith(d), _) => {
                let (open, close) = match top {
                    Ctx::Brace(_) => ('{', '}'),
                    _ => ('(', ')'),
                };
                if c == open {
                    *stack.last_mut().unwrap() = with_depth(top, d + 1);
                } else if c == close && d == 1 {
                    stack.pop();
                } else if c == close {
                    *stack.last_mut().unwrap() = with_depth(top, d - 1);
                } else if "'\"`\\".contains(c) || (c == '$' && !ch(i + 1).is_some_and(is_name)) {
                    lost = lost.or(Some(
                        "comes after quotes or substitutions inside `${ … }` or arithmetic, which flowrun does not follow",
                    ));
                }
            }
        }
        i += step;
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn with_depth(ctx: Ctx, d: u32) -> Ctx {
    match ctx {
        Ctx::Brace(_) => Ctx::Brace(d),
        _ => Ctx::Arith(d),
    }
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether the word at `i` is `case`.
fn starts_case(toks: &[Tok], i: usize) -> bool {
    let word: String = toks[i..]
        .iter()
        .take(5)
        .map(|t| match t {
            Tok::C(c) => *c,
            Tok::Ref(_) => '\0',
        })
        .collect();
    word.strip_prefix("case")
        .is_some_and(|rest| rest.chars().next().is_none_or(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::Quoting::*;
    use super::*;

    fn q(line: &str) -> Result<Vec<Quoting>, Vec<String>> {
        quoting(&crate::template::parse(line).expect("a template"))
    }

    #[test]
    fn the_place_of_each_value() {
        let x = "{{ trigger.x }}";
        for (line, want) in [
            (format!("echo {x}"), vec![Word]),
            (format!("echo --name={x}.txt {x}"), vec![Word, Word]),
            (
                format!("echo \"Hello {x}!\" '{x}' {x}"),
                vec![Double, Single, Word],
            ),
            (
                format!("echo \"$(printf %s {x})\" \"a\\\"{x}\""),
                vec![Word, Double],
            ),
            (
                format!("echo $(echo \"{x}\" '{x}') (sub {x})"),
                vec![Double, Single, Word],
            ),
            (
                format!("echo \"${{HOME}}\" {x} $((1 + 2)) {x}"),
                vec![Word, Word],
            ),
            (
                format!("echo `date` '#' \"#\" a#b {x} # {{ }} after\n{x}"),
                vec![Word, Word],
            ),
            (format!("cat <<< {x}; echo \\\\ {x}"), vec![Word, Word]),
            (format!("case {x} in a) echo {x};; esac"), vec![Word, Word]),
        ] {
            assert_eq!(q(&line), Ok(want), "{line}");
        }
    }

    #[test]
    fn places_no_quoting_is_safe_in_are_refused() {
        let x = "{{ trigger.x }}";
        for (line, why) in [
            (format!("echo \\{x}"), "backslash"),
            (format!("echo \"\\{x}\""), "backslash"),
            (format!("echo ${x}"), "follows `$`"),
            (format!("echo \"${x}\""), "follows `$`"),
            (format!("echo `echo {x}`"), "backticks"),
            (format!("echo \"`echo {x}`\""), "backticks"),
            (format!("echo $'a {x}'"), "$'"),
            (format!("echo $'it\\'s {x}'"), "$'"),
            (format!("echo `echo \\` {x}`"), "backticks"),
            (format!("echo ${{v:-{x}}}"), "${"),
            (format!("echo $(( {x} + 1 ))"), "arithmetic"),
            (format!("(( {x} ))"), "arithmetic"),
            (format!("echo $[1] {x}"), "$["),
            (format!("echo # {x}"), "comment"),
            (format!("cat <<EOF\n{x}\nEOF"), "here-document"),
            (format!("cat <<EOF\nEOF\necho {x}"), "here-document"),
            (format!("echo $(case a in a) echo;; esac) {x}"), "case"),
            (format!("echo ${{v:-\"a\"}} {x}"), "inside `${"),
        ] {
            let errors = q(&line).expect_err(&line);
            assert!(
                errors.len() == 1 && errors[0].contains(why),
                "{line}: {errors:?}"
            );
            assert!(errors[0].starts_with(x), "{errors:?}");
        }
    }
}

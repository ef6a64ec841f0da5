//! Triggers the workflow's `inputs` schema refuses: a case that expects it (`refused:`), and a
//! case that does not but would be refused anyway.
//!
//! A refused trigger starts no execution (`flowrun run` exits 2, the API answers 422), so a case
//! cannot check one through `expect`. Checking it needs no child either: the schema is applied
//! here exactly as [`crate::runner::prepare`] applies it ([`crate::inputs::prepare`]), so a
//! case that expects a refusal costs no process, and one that is refused without saying so is
//! found when the file is read: its trigger is a mistake of the test file (exit 2), not a
//! failure of the workflow.

use super::expect::{Check, Mismatch};
use super::load::Reader;
use super::model::{Expectation, Failure};
use super::path::Path as JPath;
use crate::inputs::{self, InputError};
use flowrun_codegen::Plan;
use serde_json::{Map, Value};

/// Reads a case's `refused` (case `c` at `at`), and reports what is wrong with it and with the
/// trigger: a refused trigger the case does not expect, fields a refused case cannot use.
pub(super) fn read(
    r: &mut Reader,
    c: &Map<String, Value>,
    at: &JPath,
    case: Option<&str>,
    plan: Option<&Plan>,
    trigger: &Value,
) -> Option<Expectation> {
    let expects = c.contains_key("refused");
    let here = at.key("refused");
    let refused = c.get("refused").and_then(|v| {
        let check = parse(v).map_err(|m| r.problem(&here, case, m)).ok()?;
        for key in ["expect", "snapshot", "mock", "env", "timeout_ms"] {
            if c.contains_key(key) {
                let why = if matches!(key, "expect" | "snapshot") {
                    "has nothing to check; `refused` takes an assertion on the refusal's message ({contains: …})"
                } else {
                    "does nothing"
                };
                r.problem(
                    &at.key(key),
                    case,
                    format!("a refused trigger starts no execution, so `{key}` {why}"),
                );
            }
        }
        Some(Expectation {
            text: "refused".into(),
            path: JPath::parse("refused").expect("a plain key"),
            line: r.located.line(&here),
            check,
        })
    });
    // A `refused` that could not be read has had its problem reported.
    let unreadable = expects && refused.is_none();
    let schema = plan.map(|p| p.workflow.inputs.as_ref());
    if let Some(m) = schema.and_then(|s| problem(s, trigger, expects)) {
        if !unreadable {
            let key = if expects { "refused" } else { "trigger" };
            let place = if c.contains_key(key) {
                at.key(key)
            } else {
                at.clone()
            };
            r.problem(&place, case, m);
        }
    }
    refused
}

/// Reads a case's `refused`: `true` (refused, whatever the message says) or an assertion on the
/// refusal's message (`{contains: query}`), as `expect` writes them.
pub(crate) fn parse(v: &Value) -> Result<Check, String> {
    match v {
        Value::Bool(true) => Ok(Check::Exists(true)),
        Value::Bool(false) | Value::Null => Err(
            "expected true, or an assertion on the refusal's message ({contains: …}); a case that is \
             not refused leaves `refused` out"
                .into(),
        ),
        Value::String(s) => Err(format!(
            "a bare text would have to be the whole message; write {{contains: {}}} (or matches)",
            Value::String(s.clone())
        )),
        Value::Object(_) => match Check::parse(v)? {
            Check::Exists(false) => Err(
                "exists: false can never hold: a refusal always has a message (leave `refused` out \
                 for a case that runs)"
                    .into(),
            ),
            check => Ok(check),
        },
        _ => Err(format!(
            "expected true, or an assertion on the refusal's message ({{contains: …}}, \
             {{matches: …}}); {v} is never a message"
        )),
    }
}

/// The refusal's message, if the workflow's `inputs` schema refuses `trigger` (defaults applied
/// first, as a run applies them). A schema that does not compile is the workflow's problem,
/// reported when it is compiled: not a refusal of this trigger.
pub(crate) fn refusal(schema: Option<&Value>, trigger: &Value) -> Option<String> {
    match inputs::prepare(schema, trigger.clone()) {
        Err(e @ InputError::Invalid(_)) => Some(e.to_string()),
        Err(InputError::Schema(_)) | Ok(_) => None,
    }
}

/// What is wrong with a case's trigger and `refused`, found when the file is read: a trigger
/// refused by a case that does not expect it, or a `refused` that can never hold.
pub(crate) fn problem(
    schema: Option<&Value>,
    trigger: &Value,
    expects_refusal: bool,
) -> Option<String> {
    if expects_refusal {
        return schema
            .is_none()
            .then(|| "the workflow has no `inputs` schema, so it refuses no trigger".to_string());
    }
    refusal(schema, trigger).map(|message| {
        format!(
            "the workflow's `inputs` schema refuses this trigger, so the case cannot run; to \
             test that it is refused, add `refused: true` to the case. {message}"
        )
    })
}

/// Checks a case that expects its trigger to be refused: no execution is started either way.
pub(crate) fn check(schema: Option<&Value>, trigger: &Value, want: &Expectation) -> Vec<Failure> {
    let failed = |mismatch| {
        vec![Failure::Assertion {
            path: want.text.clone(),
            line: want.line,
            mismatch,
        }]
    };
    match refusal(schema, trigger) {
        Some(message) => match want.check.check(Some(&Value::String(message))) {
            Ok(()) => Vec::new(),
            Err(m) => failed(m),
        },
        // Said in the words of the assertion written, as for a path that finds nothing (and
        // failed even for one, such as `not`, that nothing would satisfy).
        None => failed(Mismatch {
            actual: "(none: the workflow's `inputs` schema accepts the trigger; nothing was run)"
                .into(),
            actual_value: None,
            ..match want.check {
                // `refused: true`
                Check::Exists(true) => None,
                _ => want.check.check(None).err(),
            }
            .unwrap_or(Mismatch {
                operator: "exists".into(),
                expected: "a refusal by the workflow's `inputs` schema".into(),
                actual: String::new(),
                actual_value: None,
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "required": ["query"],
               "properties": {"query": {"type": "string"}, "n": {"type": "integer", "default": 3}}})
    }

    #[test]
    fn a_refusal_is_found_as_a_run_would_find_it() {
        let s = schema();
        assert!(refusal(Some(&s), &json!({"query": "q"})).is_none());
        let m = refusal(Some(&s), &json!({})).unwrap();
        assert!(
            m.starts_with("invalid input:") && m.contains("query"),
            "{m}"
        );
        // Defaults are applied before the check, as a run applies them.
        let typed =
            json!({"type": "object", "properties": {"n": {"type": "integer", "default": 3}}});
        assert!(refusal(Some(&typed), &json!({})).is_none());
        assert!(refusal(None, &json!({"anything": 1})).is_none());
    }

    fn expecting(v: Value) -> Expectation {
        Expectation {
            text: "refused".into(),
            path: JPath::parse("refused").unwrap(),
            line: Some(7),
            check: parse(&v).unwrap(),
        }
    }

    #[test]
    fn refused_checks_the_message_and_fails_on_an_accepted_trigger() {
        let s = schema();
        let yes = expecting(json!(true));
        assert!(check(Some(&s), &json!({}), &yes).is_empty());
        let about_query = expecting(json!({"contains": "query"}));
        assert!(check(Some(&s), &json!({"n": "x"}), &about_query).is_empty());
        let about_other = expecting(json!({"contains": "email"}));
        let f = check(Some(&s), &json!({}), &about_other);
        assert!(
            matches!(&f[..], [Failure::Assertion { path, line: Some(7), .. }] if path == "refused")
        );
        let f = check(Some(&s), &json!({"query": "fine"}), &yes);
        let [Failure::Assertion { mismatch, .. }] = &f[..] else {
            panic!("{f:?}")
        };
        assert!(mismatch.actual.contains("accepts"), "{mismatch:?}");
        // In the words of the assertion written; `not` fails too.
        let f = check(Some(&s), &json!({"query": "fine"}), &about_query);
        assert!(
            matches!(&f[..], [Failure::Assertion { mismatch, .. }] if mismatch.operator == "contains")
        );
        let unlike = expecting(json!({"not": {"contains": "email"}}));
        assert_eq!(check(Some(&s), &json!({"query": "fine"}), &unlike).len(), 1);
        for never in [
            json!(false),
            json!(null),
            json!(1),
            json!({"exists": false}),
        ] {
            assert!(parse(&never).is_err(), "{never}");
        }
        assert!(
            parse(&json!("email"))
                .unwrap_err()
                .contains("{contains: \"email\"}")
        );
    }

    #[test]
    fn problems_found_when_the_file_is_read() {
        let s = schema();
        let p = problem(Some(&s), &json!({}), false).unwrap();
        assert!(p.contains("refused: true") && p.contains("query"), "{p}");
        assert!(problem(Some(&s), &json!({"query": "q"}), false).is_none());
        assert!(problem(Some(&s), &json!({}), true).is_none());
        assert!(
            problem(None, &json!({}), true)
                .unwrap()
                .contains("no `inputs`")
        );
    }
}

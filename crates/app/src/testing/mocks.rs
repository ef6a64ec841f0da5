//! A node's mock as a test file writes it, read ([`parse`]) and written ([`to_value`], for
//! `--record-from`).
//!
//! - a value: the node's output, for every attempt;
//! - `{error: {type, message}}` (that key alone): every attempt fails with that error;
//! - a list: one of the above per attempt (the last repeats), to exercise `retry`: at least two
//!   (one is the outcome itself, so a list of one is taken for a list output written bare),
//!   failures before the last (a mocked output ends the node) and no more than the node makes
//!   (checked where the workflow is known, `load::read_mocks`). A `for_each` (`repeat`) node's
//!   mock is each item's (iteration's) outcome;
//! - `{output: X}` (that key alone): the output X, written so when X is itself a list or looks
//!   like one of the forms above.

use flowrun_codegen::{Mock, MockOutcome};
use serde_json::{Map, Value, json};

/// How to write an output that is a list, for the errors that a list read as attempts leads to
/// (`part`: as for [`parse`]).
pub(crate) fn list_output(part: Option<&str>) -> String {
    match part {
        None => "write {output: [...]} for an output that is a list".into(),
        Some(part) => format!(
            "the node's mock is the outcome of every {part} alike, not a list of them: write \
             {{each: [...]}} for one mock per {part}, {{output: [...]}} if every {part}'s output \
             is that list"
        ),
    }
}

/// Reads a mock; the error says what is wrong. `part`: `item` or `iteration` for the mock of a
/// node with `for_each` or `repeat`.
pub(crate) fn parse(v: &Value, part: Option<&str>) -> Result<Mock, String> {
    // A loop node's items (iterations) each with their own: `{each: [mock, …]}`.
    if let (Some(part), Some(each)) = (part, only_key(v, "each")) {
        let Value::Array(parts) = each else {
            return Err(format!(
                "each: expected a list, one mock per {part} in order (the last repeats)"
            ));
        };
        if parts.is_empty() {
            return Err(format!("each: an empty list: give one mock per {part}"));
        }
        let parts = parts
            .iter()
            .enumerate()
            .map(|(i, p)| parse(p, None).map_err(|e| format!("each[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Mock::each(parts));
    }
    let as_output = || match part {
        None => format!(
            "for the output {}, write {}",
            preview(v),
            preview(&json!({ "output": v }))
        ),
        // Writing the list as the output would give it whole to every item or iteration.
        Some(part) => format!(
            "the node's mock is the outcome of every {part} alike, not a list of them: for one \
             mock per {part} in order, write {}; if every {part}'s output is {}, write {}",
            preview(&json!({ "each": v })),
            preview(v),
            preview(&json!({ "output": v }))
        ),
    };
    match v {
        Value::Array(items) if items.is_empty() => Err(format!(
            "an empty list: a list gives one outcome per attempt; {}",
            as_output()
        )),
        // One outcome for every attempt is the outcome itself: a list of one is nearly always
        // an output that is a list, which would otherwise reach the node as its one item.
        Value::Array(items) if items.len() == 1 => {
            let alone = to_value(&Mock::new(vec![outcome(&items[0])?]));
            Err(format!(
                "a list of one outcome: a list gives one outcome per attempt (the last repeats); \
                 {}; for {} at every attempt, write {}",
                as_output(),
                preview(&items[0]),
                preview(&alone)
            ))
        }
        Value::Array(items) => {
            let attempts = items
                .iter()
                .enumerate()
                .map(|(i, item)| outcome(item).map_err(|e| format!("attempt {}: {e}", i + 1)))
                .collect::<Result<Vec<_>, _>>()?;
            // A mocked output ends the node: an outcome after one is never reached.
            let last = attempts.len() - 1;
            if let Some(i) = attempts[..last]
                .iter()
                .position(|o| matches!(o, MockOutcome::Output(_)))
            {
                return Err(format!(
                    "attempt {} is never made: attempt {} is an output, which ends the node (a \
                     list gives one outcome per attempt, the failures before the output); {}",
                    i + 2,
                    i + 1,
                    as_output()
                ));
            }
            Ok(Mock::new(attempts))
        }
        v => Ok(Mock::new(vec![outcome(v)?])),
    }
}

/// The most attempts a mock gives one call of its node (of any of its items, for `each`).
pub(crate) fn most_attempts(mock: &Mock) -> usize {
    mock.parts()
        .iter()
        .map(|p| p.attempts().len())
        .chain([mock.attempts().len()])
        .max()
        .unwrap_or(0)
}

/// A value as an error message shows it: compact JSON, cut at about 60 characters.
fn preview(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn only_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(key),
        _ => None,
    }
}

fn outcome(v: &Value) -> Result<MockOutcome, String> {
    if let Some(out) = only_key(v, "output") {
        return Ok(MockOutcome::Output(out.clone()));
    }
    let Some(e) = only_key(v, "error") else {
        return Ok(MockOutcome::Output(v.clone()));
    };
    let Value::Object(e) = e else {
        return Err("error: expected {type, message}".into());
    };
    if let Some(k) = e.keys().find(|k| *k != "type" && *k != "message") {
        return Err(format!(
            "error: unknown field '{k}' (an error has type and message)"
        ));
    }
    let text = |k: &str| match e.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("error.{k}: expected a string")),
    };
    Ok(MockOutcome::Error {
        kind: text("type")?.unwrap_or_else(|| "MockError".into()),
        message: text("message")?.ok_or("error: a message is required")?,
    })
}

/// The mock as a test file writes it: the shortest form that reads back the same.
pub(crate) fn to_value(mock: &Mock) -> Value {
    let one = |o: &MockOutcome, alone: bool| match o {
        MockOutcome::Error { kind, message } => {
            json!({"error": {"type": kind, "message": message}})
        }
        MockOutcome::Output(v) => {
            let ambiguous = (alone && v.is_array())
                || only_key(v, "output").is_some()
                || only_key(v, "error").is_some()
                || only_key(v, "each").is_some();
            if ambiguous {
                Value::Object(Map::from_iter([("output".to_string(), v.clone())]))
            } else {
                v.clone()
            }
        }
    };
    if !mock.parts().is_empty() {
        return json!({"each": mock.parts().iter().map(to_value).collect::<Vec<_>>()});
    }
    match mock.attempts() {
        [o] => one(o, true),
        list => Value::Array(list.iter().map(|o| one(o, false)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gives_items_their_own_and_reads_back_the_same() {
        let written =
            json!({"each": [{"v": 0}, [{"error": {"message": "x"}}, {"v": 1}], {"each": 2}]});
        let m = parse(&written, Some("item")).unwrap();
        assert_eq!(m.parts().len(), 3);
        assert_eq!(m.parts()[1].attempts().len(), 2);
        // An item's output that is itself `{each: …}` reads back as an output.
        assert_eq!(
            m.parts()[2].attempts(),
            &[MockOutcome::Output(json!({"each": 2}))]
        );
        assert_eq!(parse(&to_value(&m), Some("item")).unwrap(), m);
        // A node without a loop: `{each: …}` is its output, as any object.
        let plain = parse(&written, None).unwrap();
        assert!(plain.parts().is_empty());
        assert_eq!(plain.attempts(), &[MockOutcome::Output(written.clone())]);
        assert!(parse(&json!({"each": {"a": 1}}), Some("iteration")).is_err());
    }

    #[test]
    fn forms() {
        let out = |v: Value| MockOutcome::Output(v);
        let err = |k: &str, m: &str| MockOutcome::Error {
            kind: k.into(),
            message: m.into(),
        };
        for (written, attempts) in [
            (
                json!({"content": "hi"}),
                vec![out(json!({"content": "hi"}))],
            ),
            (json!("text"), vec![out(json!("text"))]),
            (
                json!({"error": {"type": "RateLimit", "message": "429"}}),
                vec![err("RateLimit", "429")],
            ),
            (
                json!({"error": {"message": "x"}}),
                vec![err("MockError", "x")],
            ),
            (
                json!([{"error": {"message": "x"}}, {"content": "ok"}]),
                vec![err("MockError", "x"), out(json!({"content": "ok"}))],
            ),
            (json!({"output": [1, 2]}), vec![out(json!([1, 2]))]),
            (
                json!({"output": {"error": "not a mock error"}}),
                vec![out(json!({"error": "not a mock error"}))],
            ),
            (
                json!({"error": "x", "other": 1}),
                vec![out(json!({"error": "x", "other": 1}))],
            ),
        ] {
            let m = parse(&written, None).unwrap();
            assert_eq!(m.attempts(), attempts.as_slice(), "{written}");
            assert_eq!(
                parse(&to_value(&m), None).unwrap(),
                m,
                "round trip of {written}"
            );
        }
        assert_eq!(to_value(&Mock::output(json!([1]))), json!({"output": [1]}));
        assert_eq!(to_value(&Mock::output(json!({"a": 1}))), json!({"a": 1}));
    }

    #[test]
    fn bad_mocks() {
        for (v, why) in [
            (json!([]), "an empty list"),
            (
                json!([1]),
                "a list of one outcome: a list gives one outcome per attempt (the last repeats); \
                 for the output [1], write {\"output\":[1]}; for 1 at every attempt, write 1",
            ),
            (
                json!([[1, 2]]),
                "for [1,2] at every attempt, write {\"output\":[1,2]}",
            ),
            (
                json!([{"error": {"message": "m"}}]),
                "at every attempt, write {\"error\":{\"type\":\"MockError\",\"message\":\"m\"}}",
            ),
            (
                json!([1, 2]),
                "attempt 2 is never made: attempt 1 is an output, which ends the node (a list \
                 gives one outcome per attempt, the failures before the output); for the output \
                 [1,2], write {\"output\":[1,2]}",
            ),
            (
                json!([{"error": {"message": "m"}}, 1, {"error": {"message": "m"}}]),
                "attempt 3 is never made: attempt 2 is an output",
            ),
            (
                json!((0..100).collect::<Vec<_>>()),
                "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,…, write",
            ),
            (json!({"error": "boom"}), "error: expected {type, message}"),
            (json!({"error": {"type": "X"}}), "a message is required"),
            (
                json!({"error": {"message": 1}}),
                "error.message: expected a string",
            ),
            (
                json!({"error": {"message": "m", "code": 1}}),
                "unknown field 'code'",
            ),
            (
                json!([1, {"error": {}}]),
                "attempt 2: error: a message is required",
            ),
        ] {
            let e = parse(&v, None).unwrap_err();
            assert!(e.contains(why), "{v}: {e}");
        }
    }
}

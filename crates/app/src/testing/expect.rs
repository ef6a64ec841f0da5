//! Assertions: `expect: { PATH: ASSERTION }` of a test case, checked against the execution record.
//!
//! An assertion is a bare value (scalar or list: equality) or a mapping of operators, all of
//! which must hold: `equals`, `contains`, `matches` (a regex), `schema` (JSON Schema), `exists`,
//! `lt`/`le`/`gt`/`ge`, `not` (an assertion that must fail). A mapping is always operators, so a
//! typo is an error instead of a silent equality check; compare with an object by `equals: {…}`.

use super::path::{Path as JPath, Seg};
use flowrun_codegen::Plan;
use flowrun_codegen::did_you_mean;
use flowrun_events::{ExecStatus, NodeStatus};
use serde_json::Value;

/// The operator names, in the order messages list them.
pub const OPERATORS: &[&str] = &[
    "equals", "contains", "matches", "schema", "exists", "lt", "le", "gt", "ge", "not",
];

#[derive(Debug)]
pub(crate) enum Check {
    Equals(Value),
    Contains(Value),
    Matches(regex::Regex),
    Schema(Box<jsonschema::Validator>, Value),
    Exists(bool),
    Compare(&'static str, f64),
    Not(Box<Check>),
    All(Vec<Check>),
}

/// Why an assertion failed: the operator, what it expected, what was there.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mismatch {
    pub operator: String,
    pub expected: String,
    /// What was there, as a report says it (cut at 300 characters, `(missing…)`).
    pub actual: String,
    /// What was there as JSON, for a script reading `--json` (the text above is for people):
    /// absent when the path found nothing, or when it is over [`ACTUAL_VALUE_MAX`] as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_value: Option<Box<Value>>,
}

/// The largest value (its compact JSON, in bytes) a mismatch carries as `actual_value`: a
/// report of many failed cases stays readable, and an output of megabytes stays in the store.
pub const ACTUAL_VALUE_MAX: usize = 16 * 1024;

impl Mismatch {
    /// `v` as [`Mismatch::actual_value`]: itself when small enough.
    pub(crate) fn value(v: Option<&Value>) -> Option<Box<Value>> {
        /// Counts the bytes written, and stops the writing past the limit.
        struct Upto(usize);
        impl std::io::Write for Upto {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0 += b.len();
                if self.0 > ACTUAL_VALUE_MAX {
                    return Err(std::io::Error::other("over the limit"));
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let v = v?;
        serde_json::to_writer(Upto(0), v)
            .ok()
            .map(|()| Box::new(v.clone()))
    }
}

impl Check {
    /// Reads an assertion as a test file writes it; the error says what is wrong with it.
    pub(crate) fn parse(v: &Value) -> Result<Check, String> {
        let Value::Object(ops) = v else {
            return Ok(Check::Equals(v.clone()));
        };
        if ops.is_empty() {
            return Err(
                "an empty mapping: give operators (equals, contains, …), or equals: {} to compare with an empty object".into(),
            );
        }
        let mut all = Vec::new();
        for (op, arg) in ops {
            let check = match op.as_str() {
                "equals" => Check::Equals(arg.clone()),
                "contains" => Check::Contains(arg.clone()),
                "matches" => {
                    let re = arg
                        .as_str()
                        .ok_or("matches: expected a regular expression (a string)")?;
                    Check::Matches(
                        regex::Regex::new(re)
                            .map_err(|e| format!("matches: not a valid regular expression: {e}"))?,
                    )
                }
                "schema" => {
                    let validator = jsonschema::validator_for(arg)
                        .map_err(|e| format!("schema: not a valid JSON Schema: {e}"))?;
                    Check::Schema(Box::new(validator), arg.clone())
                }
                "exists" => Check::Exists(arg.as_bool().ok_or("exists: expected true or false")?),
                "lt" | "le" | "gt" | "ge" => {
                    let n = arg
                        .as_f64()
                        .ok_or_else(|| format!("{op}: expected a number"))?;
                    let op = OPERATORS.iter().find(|o| **o == op).expect("listed");
                    Check::Compare(op, n)
                }
                "not" => Check::Not(Box::new(
                    Check::parse(arg).map_err(|e| format!("not: {e}"))?,
                )),
                other => {
                    return Err(format!(
                        "unknown operator '{other}'{} (one of: {}); to compare with an object, write equals: {{…}}",
                        did_you_mean(other, OPERATORS.iter().copied()),
                        OPERATORS.join(", ")
                    ));
                }
            };
            all.push(check);
        }
        Ok(if all.len() == 1 {
            all.pop().expect("one")
        } else {
            Check::All(all)
        })
    }

    /// Checks `actual` (`None`: the path does not exist).
    pub(crate) fn check(&self, actual: Option<&Value>) -> Result<(), Mismatch> {
        let fail = |operator: &str, expected: String| {
            Err(Mismatch {
                operator: operator.to_string(),
                expected,
                actual: show(actual),
                actual_value: Mismatch::value(actual),
            })
        };
        match self {
            Check::All(list) => list.iter().try_for_each(|c| c.check(actual)),
            Check::Equals(want) => match actual {
                Some(a) if same(a, want) => Ok(()),
                _ => fail("equals", compact(want)),
            },
            Check::Contains(want) => {
                let ok = match (actual, want) {
                    (Some(Value::String(s)), Value::String(w)) => s.contains(w.as_str()),
                    (Some(Value::Array(items)), w) => items.iter().any(|i| same(i, w)),
                    (Some(Value::Object(_)), Value::Object(w)) => subset(actual.expect("some"), w),
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    let what = match want {
                        Value::String(_) => "a text or list containing",
                        Value::Object(_) => "an object or list containing",
                        _ => "a list containing",
                    };
                    fail("contains", format!("{what} {}", compact(want)))
                }
            }
            Check::Matches(re) => match actual {
                Some(Value::String(s)) if re.is_match(s) => Ok(()),
                _ => fail("matches", format!("a text matching /{}/", re.as_str())),
            },
            Check::Schema(validator, schema) => {
                let Some(a) = actual else {
                    return fail(
                        "schema",
                        format!("a value valid against {}", compact(schema)),
                    );
                };
                let errors: Vec<String> = validator
                    .iter_errors(a)
                    .take(3)
                    .map(|e| {
                        let at = e.instance_path().to_string();
                        if at.is_empty() {
                            e.to_string()
                        } else {
                            format!("{at}: {e}")
                        }
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    fail(
                        "schema",
                        format!("a value valid against the schema ({})", errors.join("; ")),
                    )
                }
            }
            Check::Exists(want) => {
                let there = actual.is_some_and(|v| !v.is_null());
                if there == *want {
                    Ok(())
                } else if *want {
                    fail("exists", "a value (not null)".into())
                } else {
                    fail("exists", "no value (missing or null)".into())
                }
            }
            Check::Compare(op, bound) => {
                let ok = actual.and_then(Value::as_f64).is_some_and(|a| match *op {
                    "lt" => a < *bound,
                    "le" => a <= *bound,
                    "gt" => a > *bound,
                    _ => a >= *bound,
                });
                let sign = match *op {
                    "lt" => "<",
                    "le" => "<=",
                    "gt" => ">",
                    _ => ">=",
                };
                if ok {
                    Ok(())
                } else {
                    fail(op, format!("a number {sign} {}", num(*bound)))
                }
            }
            Check::Not(inner) => match inner.check(actual) {
                Err(_) => Ok(()),
                Ok(()) => {
                    let described = match inner.check_describe() {
                        Some(d) => d,
                        None => "the inner assertion to fail".into(),
                    };
                    fail("not", format!("not {described}"))
                }
            },
        }
    }

    /// What the assertion asks for, in words (for `not`).
    fn check_describe(&self) -> Option<String> {
        Some(match self {
            Check::Equals(v) => compact(v),
            Check::Contains(v) => format!("containing {}", compact(v)),
            Check::Matches(re) => format!("matching /{}/", re.as_str()),
            Check::Schema(_, s) => format!("valid against {}", compact(s)),
            Check::Exists(true) => "existing".into(),
            Check::Exists(false) => "missing".into(),
            Check::Compare(op, n) => format!("{op} {}", num(*n)),
            Check::Not(inner) => format!("not {}", inner.check_describe()?),
            Check::All(list) => list
                .iter()
                .map(Check::check_describe)
                .collect::<Option<Vec<_>>>()?
                .join(" and "),
        })
    }
}

/// Equal as JSON, numbers by value (`1` equals `1.0`).
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Every entry of `want` is in `actual` (an object), with an equal value.
fn subset(actual: &Value, want: &serde_json::Map<String, Value>) -> bool {
    want.iter()
        .all(|(k, v)| actual.get(k).is_some_and(|a| same(a, v)))
}

fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// A value as compact JSON, cut after 300 characters.
fn compact(v: &Value) -> String {
    flowrun_events::preview(v, 300)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(missing)".into(),
        Some(v) => compact(v),
    }
}

/// The fields of the execution record assertions can name, and of each node in it.
pub const RECORD_FIELDS: &[&str] = &[
    "id",
    "status",
    "mode",
    "workflow_id",
    "workflow_name",
    "trigger",
    "output",
    "error",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "nodes",
    "logs",
];
pub const NODE_FIELDS: &[&str] = &[
    "status",
    "attempt",
    "duration_ms",
    "input",
    "output",
    "error",
    "started_at",
    "finished_at",
    "from_execution",
    // A `for_each` node's items and a `repeat` node's iterations (their rows, in order).
    "items",
    "iterations",
];

/// A path an assertion names must start at a field of the record, and name a node the
/// workflow has.
pub(crate) fn check_path(p: &JPath, plan: Option<&Plan>) -> Result<(), String> {
    let root = p.first_key().unwrap_or("");
    if !RECORD_FIELDS.contains(&root) {
        return Err(format!(
            "unknown field '{root}' of the execution record{} (one of: {})",
            did_you_mean(root, RECORD_FIELDS.iter().copied()),
            RECORD_FIELDS.join(", ")
        ));
    }
    if root != "nodes" {
        return Ok(());
    }
    let Some(Seg::Key(node)) = p.0.get(1) else {
        return Ok(());
    };
    known_node(plan, node)?;
    match p.0.get(2) {
        Some(Seg::Key(f)) if !NODE_FIELDS.contains(&f.as_str()) => Err(format!(
            "unknown field '{f}' of a node{} (one of: {})",
            did_you_mean(f, NODE_FIELDS.iter().copied()),
            NODE_FIELDS.join(", ")
        )),
        Some(Seg::Index(_)) => Err("a node's fields are named (status, output, …)".into()),
        Some(Seg::Key(f)) if f == "items" || f == "iterations" => {
            let Some(n) = plan.and_then(|p| p.workflow.node(node)) else {
                return Ok(());
            };
            match (f.as_str(), n.for_each.is_some(), n.repeat.is_some()) {
                ("items", false, _) => Err(format!(
                    "node '{node}' has no `for_each`, so no items (its row is `nodes.{node}`)"
                )),
                ("iterations", _, false) => Err(format!(
                    "node '{node}' has no `repeat`, so no iterations (its row is `nodes.{node}`)"
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// An assertion on a status (`status`, `nodes.<id>.status`) that compares it with a value no
/// status has (`succes`) could never pass, or could never fail under `not`: refused when the
/// test file loads, listing the statuses there are.
pub(crate) fn check_status(p: &JPath, check: &Check) -> Result<(), String> {
    let key = |i: usize| p.key_at(i);
    let statuses: Vec<&str> = match (p.0.len(), key(0), key(2)) {
        (1, Some("status"), _) => ExecStatus::ALL.iter().map(|s| s.as_str()).collect(),
        (3, Some("nodes"), Some("status")) => NodeStatus::ALL.iter().map(|s| s.as_str()).collect(),
        _ => return Ok(()),
    };
    fn compared(c: &Check, out: &mut Vec<Value>) {
        match c {
            Check::Equals(v) => out.push(v.clone()),
            Check::Not(c) => compared(c, out),
            Check::All(cs) => cs.iter().for_each(|c| compared(c, out)),
            _ => {}
        }
    }
    let mut values = Vec::new();
    compared(check, &mut values);
    match values
        .iter()
        .find(|v| !v.as_str().is_some_and(|s| statuses.contains(&s)))
    {
        Some(v) => Err(format!(
            "no status is {v} (one of: {})",
            statuses.join(", ")
        )),
        None => Ok(()),
    }
}

/// A node a path names must be one the workflow has (when it is known).
pub(crate) fn known_node(plan: Option<&Plan>, id: &str) -> Result<(), String> {
    match plan.filter(|p| p.workflow.node(id).is_none()) {
        Some(plan) => Err(format!(
            "the workflow has no node '{id}'; its nodes are: {}",
            node_ids(plan)
        )),
        None => Ok(()),
    }
}

pub(crate) fn node_ids(plan: &Plan) -> String {
    let ids: Vec<&str> = plan.workflow.nodes.iter().map(|n| n.id.as_str()).collect();
    ids.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_carries_the_value_found_when_it_is_small() {
        let value = |v: &Value| Mismatch::value(Some(v)).map(|b| *b);
        assert_eq!(value(&json!({"a": [1, 2]})), Some(json!({"a": [1, 2]})));
        assert_eq!(Mismatch::value(None), None);
        let big = json!("x".repeat(ACTUAL_VALUE_MAX));
        assert_eq!(value(&big), None, "over the limit with its quotes");
        let fits = json!("x".repeat(ACTUAL_VALUE_MAX - 2));
        assert_eq!(value(&fits), Some(fits.clone()));
        let m = Check::parse(&json!({"gt": 5}))
            .unwrap()
            .check(Some(&json!(3)))
            .unwrap_err();
        assert_eq!(
            (m.actual.as_str(), m.actual_value.map(|b| *b)),
            ("3", Some(json!(3)))
        );
    }

    use serde_json::json;

    fn check(assertion: Value, actual: Value) -> Result<(), Mismatch> {
        Check::parse(&assertion).unwrap().check(Some(&actual))
    }

    #[test]
    fn each_operator_passes_and_fails() {
        let cases = [
            (json!("success"), json!("success"), json!("error")),
            (
                json!({"equals": {"a": 1}}),
                json!({"a": 1.0}),
                json!({"a": 2}),
            ),
            (
                json!({"contains": "cycl"}),
                json!("acyclic"),
                json!("graph"),
            ),
            (json!({"contains": 2}), json!([1, 2]), json!([1, 3])),
            (
                json!({"contains": {"a": 1}}),
                json!({"a": 1, "b": 2}),
                json!({"b": 2}),
            ),
            (
                json!({"matches": "^A.*h$"}),
                json!("A graph"),
                json!("a graph"),
            ),
            (
                json!({"schema": {"type": "object", "required": ["x"]}}),
                json!({"x": 1}),
                json!({"y": 1}),
            ),
            (json!({"exists": true}), json!(0), json!(null)),
            (json!({"exists": false}), json!(null), json!(false)),
            (json!({"lt": 0.01}), json!(0.001), json!(0.01)),
            (json!({"le": 3}), json!(3), json!(4)),
            (json!({"gt": 0, "lt": 10}), json!(5), json!(10)),
            (json!({"ge": 2}), json!(2), json!("2")),
            (
                json!({"not": {"contains": "x"}}),
                json!("abc"),
                json!("xyz"),
            ),
            (json!({"not": "error"}), json!("success"), json!("error")),
        ];
        for (assertion, good, bad) in cases {
            assert_eq!(
                check(assertion.clone(), good.clone()),
                Ok(()),
                "{assertion} on {good}"
            );
            let m = check(assertion.clone(), bad.clone()).unwrap_err();
            assert_eq!(m.actual, bad.to_string(), "{assertion}");
        }
    }

    #[test]
    fn a_missing_value_fails_everything_but_exists_false() {
        let missing = |a: Value| Check::parse(&a).unwrap().check(None);
        assert!(missing(json!({"exists": false})).is_ok());
        assert!(missing(json!({"not": 1})).is_ok());
        let m = missing(json!({"contains": "x"})).unwrap_err();
        assert_eq!(m.actual, "(missing)");
    }

    #[test]
    fn mismatches_say_operator_expected_and_actual() {
        let m = check(json!({"contains": "acyclic"}), json!("A tree")).unwrap_err();
        assert_eq!(m.operator, "contains");
        assert_eq!(m.expected, "a text or list containing \"acyclic\"");
        assert_eq!(m.actual, "\"A tree\"");
        let m = check(json!({"not": {"lt": 5}}), json!(1)).unwrap_err();
        assert_eq!(
            (m.operator.as_str(), m.expected.as_str()),
            ("not", "not lt 5")
        );
    }

    #[test]
    fn bad_assertions_are_errors() {
        for (a, why) in [
            (
                json!({"contians": "x"}),
                "unknown operator 'contians', did you mean 'contains'?",
            ),
            (json!({}), "an empty mapping"),
            (json!({"matches": "("}), "not a valid regular expression"),
            (json!({"schema": {"type": 5}}), "not a valid JSON Schema"),
            (json!({"lt": "x"}), "lt: expected a number"),
            (json!({"exists": "yes"}), "exists: expected true or false"),
            (json!({"not": {"nope": 1}}), "not: unknown operator"),
        ] {
            let e = Check::parse(&a).unwrap_err();
            assert!(e.contains(why), "{a}: {e}");
        }
    }
}

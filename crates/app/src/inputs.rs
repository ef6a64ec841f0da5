//! Trigger data: defaults from the workflow's `inputs` schema, then validation against it,
//! before anything is spawned.

use serde_json::Value;

pub use flowrun_codegen::apply_defaults;

/// A problem with the input schema itself or with the data.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("field 'inputs': not a valid JSON Schema: {0}")]
    Schema(String),
    #[error("invalid input:{}", problems_text(.0))]
    Invalid(Vec<InputProblem>),
}

/// One thing wrong with the trigger data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// The field, as a dotted path (`opts.n`); `None` for the data as a whole.
    pub field: Option<String>,
    pub message: String,
}

fn problems_text(list: &[InputProblem]) -> String {
    list.iter()
        .map(|p| match &p.field {
            Some(f) => format!("\n  field '{f}': {}", p.message),
            None => format!("\n  input: {}", p.message),
        })
        .collect()
}

/// Compiles a workflow as every front end checks one (`validate`, the server's list, `flowrun
/// test`): codegen's plan, then its `inputs` schema, which codegen cannot check (it has no JSON
/// Schema validator). The schema's problem is located at its field.
pub fn compile(
    source: &flowrun_codegen::Source,
) -> Result<flowrun_codegen::Plan, flowrun_codegen::Diagnostics> {
    let plan = flowrun_codegen::compile(source)?;
    let Some(schema) = plan.workflow.inputs.as_ref() else {
        return Ok(plan);
    };
    let problems = match validator(schema) {
        Err(InputError::Schema(why)) => vec![format!("not a valid JSON Schema: {why}")],
        Err(e) => vec![e.to_string()],
        Ok(v) => bad_defaults(schema, &v),
    };
    if problems.is_empty() {
        return Ok(plan);
    }
    let all = problems
        .into_iter()
        .map(|m| source.diagnostic("inputs", m))
        .collect();
    Err(flowrun_codegen::Diagnostics(all))
}

/// The `default`s their own schema refuses. Each would make every trigger without its field
/// refused, which a run only says as a problem of that field. A default is checked where it
/// lands, `{"o": {"n": DEFAULT}}` (its own defaults filled in) against the whole schema, so that
/// `$ref`s resolve; only the errors inside it count (the rest of that instance is not the
/// default's to satisfy: required neighbours, say).
fn bad_defaults(schema: &Value, validator: &jsonschema::Validator) -> Vec<String> {
    type Found = Vec<(String, String)>;
    fn walk(sub: &Value, at: &mut Vec<String>, v: &jsonschema::Validator, out: &mut Found) {
        let Some(props) = sub.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (key, s) in props {
            at.push(key.clone());
            if let Some(d) = s.get("default") {
                let mut value = d.clone();
                apply_defaults(s, &mut value);
                let instance = at.iter().rev().fold(value, |inner, k| {
                    Value::Object(serde_json::Map::from_iter([(k.clone(), inner)]))
                });
                let pointer: String = at
                    .iter()
                    .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
                    .collect();
                for e in v.iter_errors(&instance) {
                    let place = e.instance_path().to_string();
                    if place == pointer || place.starts_with(&format!("{pointer}/")) {
                        // Named by where it is wrong: a default inside this one is checked
                        // on its own too, and its problem is said once.
                        let field = place
                            .trim_start_matches('/')
                            .split('/')
                            .map(|k| k.replace("~1", "/").replace("~0", "~"))
                            .collect::<Vec<_>>()
                            .join(".");
                        let found = (field, e.to_string());
                        if !out.contains(&found) {
                            out.push(found);
                        }
                    }
                }
            }
            walk(s, at, v, out);
            at.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), validator, &mut out);
    out.into_iter()
        .map(|(field, e)| format!("the default of '{field}' does not satisfy its own schema: {e}"))
        .collect()
}

/// Starts building, on another thread, what the first validator of a process needs before
/// anything else: its draft's meta-schema validator (jsonschema checks every schema it compiles
/// against it, builds it once per process, ~1.1 ms for Draft 2020-12, and offers no public way
/// around it). The caller goes on preparing and joins the thread before it checks the trigger,
/// so that millisecond overlaps its own work instead of adding to a cold run. `None` after the
/// first call of a process: `serve` and `test` have it built already.
pub fn start_meta_schema(schema: &Value) -> Option<std::thread::JoinHandle<()>> {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    // Which meta-schema is the draft's, and the draft is named by `$schema` alone: the thread
    // gets that, not a copy of the schema to check twice (`validator` checks it and says what
    // is wrong with it).
    let draft_of = match schema.get("$schema") {
        Some(s) => serde_json::json!({ "$schema": s }),
        None => serde_json::json!({}),
    };
    std::thread::Builder::new()
        .name("meta-schema".into())
        .spawn(move || {
            let _ = jsonschema::meta::validate(&draft_of);
        })
        .ok()
}

/// The schema's validator, built once per process for each schema (`serve` and `test` check
/// every execution's trigger against its workflow's: building it was most of that work).
fn validator(schema: &Value) -> Result<std::sync::Arc<jsonschema::Validator>, InputError> {
    static BUILT: crate::shared::Memo<std::sync::Arc<jsonschema::Validator>> =
        crate::shared::Memo::new(64);
    BUILT.get_or(&schema.to_string(), || {
        jsonschema::validator_for(schema)
            .map(std::sync::Arc::new)
            .map_err(|e| InputError::Schema(e.to_string()))
    })
}

/// Applies defaults and validates. Messages name the field (`/query`) that is wrong.
pub fn prepare(schema: Option<&Value>, mut data: Value) -> Result<Value, InputError> {
    let Some(schema) = schema else {
        return Ok(data);
    };
    apply_defaults(schema, &mut data);
    let validator = validator(schema)?;
    let errors: Vec<InputProblem> = validator
        .iter_errors(&data)
        .map(|e| {
            let mut field = field_path(&e.instance_path().to_string());
            // A missing property is the field a form marks, not the object it belongs in.
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                if let Some(name) = property.as_str() {
                    field = Some(match field {
                        Some(parent) => format!("{parent}.{name}"),
                        None => name.to_string(),
                    });
                }
            }
            InputProblem {
                field,
                message: e.to_string(),
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(data)
    } else {
        Err(InputError::Invalid(errors))
    }
}

/// A JSON pointer (`/tags/1/name`) as the paths of workflow diagnostics write it
/// (`tags[1].name`, `flowrun_codegen::path_text`); None for the whole input.
fn field_path(pointer: &str) -> Option<String> {
    use flowrun_codegen::Seg;
    let path: Vec<Seg> = pointer
        .split('/')
        .skip(1)
        .map(|seg| {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            match seg.parse::<usize>() {
                Ok(i) if seg.bytes().all(|b| b.is_ascii_digit()) => Seg::Index(i),
                _ => Seg::Key(seg),
            }
        })
        .collect();
    (!path.is_empty()).then(|| flowrun_codegen::path_text(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Fields as a form marks them: a missing one by its own name, list items by index, as
    /// workflow diagnostics write paths (`then[0]`).
    #[test]
    fn problems_name_the_field_a_form_would_mark() {
        let schema = json!({"type": "object", "required": ["user"], "properties": {
            "user": {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}},
            "tags": {"type": "array", "items": {"type": "string"}}}});
        let fields = |data: Value| -> Vec<Option<String>> {
            match prepare(Some(&schema), data) {
                Err(InputError::Invalid(p)) => p.into_iter().map(|p| p.field).collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(fields(json!({"user": {}})), [Some("user.age".into())]);
        assert_eq!(fields(json!({})), [Some("user".into())]);
        assert_eq!(
            fields(json!({"user": {"age": 1}, "tags": ["a", 2]})),
            [Some("tags[1]".into())]
        );
    }

    #[test]
    fn defaults_are_filled_in_inside_a_default_so_applying_them_again_changes_nothing() {
        let schema = json!({"type": "object", "properties": {
            "o": {"type": "object", "default": {}, "properties": {
                "n": {"type": "integer", "default": 3},
                "deep": {"type": "object", "default": {"k": 1}, "properties": {"m": {"default": [1]}}}}}}});
        let mut once = json!({});
        apply_defaults(&schema, &mut once);
        assert_eq!(once, json!({"o": {"n": 3, "deep": {"k": 1, "m": [1]}}}));
        let mut twice = once.clone();
        apply_defaults(&schema, &mut twice);
        assert_eq!(twice, once);
        // A default the schema itself refuses is refused (it used to pass here, then reach the
        // nodes through the runtime's second pass).
        let bad = json!({"type": "object", "properties": {"o": {"type": "object", "default": {},
            "properties": {"n": {"type": "integer", "default": "x"}}}}});
        let e = prepare(Some(&bad), json!({})).unwrap_err().to_string();
        assert!(e.contains("field 'o.n'"), "{e}");
    }

    #[test]
    fn a_default_its_own_schema_refuses_is_found_wherever_it_is() {
        let schema = json!({"type": "object", "required": ["q"],
            "$defs": {"count": {"type": "integer", "minimum": 1}},
            "properties": {
                "q": {"type": "string"},
                "ok": {"type": "integer", "default": 2},
                "n": {"$ref": "#/$defs/count", "default": 0},
                "o": {"type": "object", "required": ["must"], "default": {},
                      "properties": {"must": {"type": "string"},
                                     "deep": {"type": "boolean", "default": "yes"}}}}});
        let v = validator(&schema).unwrap();
        let bad = bad_defaults(&schema, &v);
        assert_eq!(bad.len(), 3, "{bad:#?}");
        assert!(bad[0].starts_with("the default of 'n' does not satisfy its own schema: 0 is less than the minimum of 1"), "{bad:#?}");
        // `o`'s default lacks its required `must`: that is the default's own problem.
        assert!(
            bad[1].starts_with("the default of 'o' ")
                && bad[1].contains("\"must\" is a required property"),
            "{bad:#?}"
        );
        assert!(bad[2].starts_with("the default of 'o.deep' "), "{bad:#?}");
        // The root's `required: [q]` is not any default's to satisfy.
        assert!(!bad.iter().any(|b| b.contains("\"q\"")), "{bad:#?}");
        let fine = json!({"properties": {"a": {"type": "string", "default": "x"}}});
        assert!(bad_defaults(&fine, &validator(&fine).unwrap()).is_empty());
    }

    #[test]
    fn defaults_and_errors() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string", "default": "World"},
            "opts": {"type": "object", "properties": {"n": {"type": "integer", "default": 3}}}
        }, "required": ["name"]});
        let v = prepare(Some(&schema), json!({"opts": {}})).unwrap();
        assert_eq!(v, json!({"opts": {"n": 3}, "name": "World"}));
        let err = prepare(Some(&schema), json!({"name": 5}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field 'name'"), "{err}");
    }

    #[test]
    fn the_meta_schema_is_started_once_and_a_bad_schema_still_reported_after_it() {
        let bad = json!({"type": "object", "properties": {"n": {"type": "not-a-type"}}});
        // Draft 2019-09's meta-schema: a schema naming another draft gets that draft's.
        let other = json!({"$schema": "https://json-schema.org/draft/2019-09/schema", "type": 7});
        let first = start_meta_schema(&bad).expect("the first call of a process starts it");
        assert!(start_meta_schema(&bad).is_none(), "started twice");
        first.join().expect("the thread does not panic");
        let err = prepare(Some(&bad), json!({"n": 1}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not-a-type"), "{err}");
        let err = prepare(Some(&other), json!({})).unwrap_err().to_string();
        assert!(err.contains('7'), "{err}");
        // A `$schema` no draft has: the thread's check fails quietly, the build says why.
        let unknown = json!({"$schema": "https://example.com/no-such-draft", "type": "object"});
        let copy = unknown.clone();
        let refused = std::thread::spawn(move || jsonschema::meta::validate(&copy).is_err())
            .join()
            .expect("no panic for an unknown meta-schema");
        assert!(refused);
        let err = prepare(Some(&unknown), json!({})).unwrap_err().to_string();
        assert!(err.contains("no-such-draft"), "{err}");
    }
}

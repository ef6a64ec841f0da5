//! Trigger data: defaults from the workflow's `inputs` schema, then validation against it,
//! before anything is spawned.

use serde_json::Value;

/// Fills in `default`s of missing object properties, recursively (the runtime does the same when
/// a script is run by hand).
pub fn apply_defaults(schema: &Value, data: &mut Value) {
    let (Some(props), Value::Object(obj)) =
        (schema.get("properties").and_then(Value::as_object), data)
    else {
        return;
    };
    for (key, sub) in props {
        match obj.get_mut(key) {
            Some(v) => apply_defaults(sub, v),
            None => {
                if let Some(d) = sub.get("default") {
                    obj.insert(key.clone(), d.clone());
                }
            }
        }
    }
}

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

/// Checks that the schema compiles.
pub fn check_schema(schema: &Value) -> Result<(), InputError> {
    validator(schema).map(|_| ())
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
            let path = e.instance_path().to_string();
            InputProblem {
                field: (!path.is_empty()).then(|| path.trim_start_matches('/').replace('/', ".")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}

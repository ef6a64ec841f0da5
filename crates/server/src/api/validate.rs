//! `POST /api/validate`: everything an editor shows about an unsaved definition, without running
//! any of it: diagnostics (code nodes compiled by the interpreter a run would use), the input
//! schema with its defaults, the connections it needs and whether each is bound, the agent CLIs
//! it needs and whether each is found, and per node what it reads.

use super::error::{ApiError, blocking};
use super::parse_body;
use crate::AppState;
use crate::workflows;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use flowrun_app::code_check::{self, CodeCheck};
use flowrun_codegen::Plan;
use flowrun_codegen::pyliteral::Data;
use flowrun_codegen::template::Part;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    #[serde(default)]
    workflow: Option<Value>,
    /// Variables the editor would send with a run (`env`, `secrets`): connections they bind
    /// count as bound, and agent CLIs are looked for on `env`'s `PATH`. Their values are not
    /// kept, and no other value is used.
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// The directory a run would be given (`cwd`): where relative agent commands are looked for.
    #[serde(default)]
    cwd: Option<String>,
}

/// Template references inside compiled params, each once, in order.
fn references(d: &Data, out: &mut Vec<String>) {
    match d {
        Data::Template(t) => {
            for p in &t.parts {
                if let Part::Ref(r) = p {
                    let s = r.to_string();
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
        Data::List(items) => items.iter().for_each(|i| references(i, out)),
        Data::Dict(entries) => entries.iter().for_each(|(_, v)| references(v, out)),
        Data::Null | Data::Bool(_) | Data::Number(_) | Data::Str(_) => {}
    }
}

/// Per node, in execution order: what it reads (`trigger.x`, `nodes.a.output…`, `item`, …),
/// the nodes it waits for, and the environment variables it needs (its connections').
fn nodes(plan: &Plan) -> Value {
    plan.order
        .iter()
        .map(|&i| {
            let n = &plan.workflow.nodes[i];
            let mut reads = Vec::new();
            references(&plan.params[i], &mut reads);
            references(&plan.for_each[i], &mut reads);
            references(&plan.until[i], &mut reads);
            let env: Vec<&str> = n
                .kind
                .connections()
                .iter()
                .filter_map(|(c, _)| plan.workflow.connections.get(*c))
                .map(|c| c.env.as_str())
                .collect();
            let after: Vec<&str> = plan.deps[i]
                .iter()
                .map(|&d| plan.workflow.nodes[d].id.as_str())
                .collect();
            json!({"id": n.id, "type": n.kind.type_name(), "name": n.name,
                   "reads": reads, "after": after, "env": env})
        })
        .collect()
}

/// `POST /api/validate`.
pub async fn validate(
    State(app): State<AppState>,
    _: super::NoQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: ValidateBody = parse_body(body, app.security.max_body_bytes)?;
    let Some(def) = body.workflow else {
        return Err(ApiError::bad_request(
            "the body needs \"workflow\": the definition to check",
        ));
    };
    blocking(move || {
        let file = Path::new("<request>");
        // What the list of nodes shows of a definition that does not parse: its nodes as written.
        let written = def.get("nodes").and_then(Value::as_array).map(|nodes| {
            let field = |n: &Value, k: &str| n.get(k).filter(|v| v.is_string()).cloned();
            nodes
                .iter()
                .map(|n| {
                    json!({"id": field(n, "id"), "type": field(n, "type"), "name": field(n, "name"),
                           "reads": null, "after": null, "env": null})
                })
                .collect::<Vec<Value>>()
        });
        // Said when the definition has errors (its code is compiled once it has none).
        let skipped_for_errors = code_check::skipped_for_errors(&def);
        let mut entry = match flowrun_codegen::source::from_value(def, "<request>") {
            Ok(source) => workflows::check(
                file,
                workflows::placed(app.workflows_dir.as_deref(), source),
            ),
            Err(d) => workflows::unparsed(file, d),
        };
        // Code nodes compiled by the interpreter a run would use: a run refuses a source that
        // does not compile before any node runs, so it is an error here too.
        let mut compile_skipped = None;
        if let (Some(source), Some(plan), true) =
            (&entry.source, &entry.plan, entry.errors.is_empty())
        {
            match code_check::check(source, plan, app.options.python.as_deref()) {
                CodeCheck::Done(problems) => entry.errors = problems,
                CodeCheck::Skipped(why) => compile_skipped = Some(why),
            }
        } else if !entry.errors.is_empty() {
            compile_skipped = skipped_for_errors;
        }
        let given = |var: &str| {
            body.env
                .get(var)
                .or(body.secrets.get(var))
                .is_some_and(|v| !v.is_empty())
                || workflows::bound_here(var)
        };
        // Agent CLIs are looked for as a run with this `env` and `cwd` would look.
        let lookup = workflows::AgentLookup {
            path: body.env.get("PATH").map(String::as_str),
            cwd: body.cwd.as_deref().map(Path::new),
        };
        let mut v = workflows::describe_with(&entry, false, &given, &lookup);
        let obj = v.as_object_mut().expect("describe gives an object");
        obj.remove("file");
        obj.insert("diagnostics".into(), json!(entry.errors));
        obj.insert("compile_skipped".into(), json!(compile_skipped));
        obj.remove("errors");
        let node_list = match (&entry.plan, &entry.source) {
            (Some(plan), _) => nodes(plan),
            (None, Some(s)) => s
                .workflow
                .nodes
                .iter()
                .map(|n| {
                    json!({"id": n.id, "type": n.kind.type_name(), "name": n.name,
                                "reads": null, "after": null, "env": null})
                })
                .collect(),
            _ => json!(written.unwrap_or_default()),
        };
        obj.insert("nodes".into(), node_list);
        Ok(Json(v))
    })
    .await
}

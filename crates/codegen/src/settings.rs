//! The workflow's own settings beside its nodes: `output`, `cwd` and the cost limits. Checked
//! here, after the nodes are known, because `output` may name any of them.

use crate::diagnostic::Diagnostic;
use crate::model::Workflow;
use crate::params;
use crate::pyliteral::Data;
use crate::template::{EXECUTION_KEYS, NODE_FIELDS, Reference, Segment};
use std::collections::HashMap;

/// Checks the settings and compiles `output` (null when the workflow has none: the runtime then
/// takes the last node's output, as it always did).
pub(crate) fn check(
    wf: &Workflow,
    index: &HashMap<&str, usize>,
    diags: &mut Vec<Diagnostic>,
) -> Data {
    for (field, value) in [
        ("max_cost_usd", wf.max_cost_usd),
        ("warn_cost_usd", wf.warn_cost_usd),
    ] {
        if let Some(v) = value
            && !(v.is_finite() && v >= 0.0)
        {
            diags.push(Diagnostic::new("must be a number of US dollars ≥ 0").field(field));
        }
    }
    if let Some(cwd) = &wf.cwd
        && (cwd.is_empty() || cwd.contains('\0') || cwd.contains("{{"))
    {
        diags.push(
            Diagnostic::new(
                "a directory path, absolute or relative to the workflow file (no templates: it is \
                 fixed before any node runs)",
            )
            .field("cwd"),
        );
    }
    let Some(output) = &wf.output else {
        return Data::Null;
    };
    match params::workflow_output(output) {
        Ok(p) => {
            for (field, r) in &p.references {
                if let Err(msg) = check_reference(r, index) {
                    diags.push(Diagnostic::new(msg).field(field.clone()));
                }
            }
            p.data
        }
        Err(errs) => {
            diags.extend(errs);
            Data::Null
        }
    }
}

/// A reference in `output`: the trigger, the execution, or any node's `output`/`error`/`status`.
fn check_reference(r: &Reference, index: &HashMap<&str, usize>) -> Result<(), String> {
    match r.path.as_slice() {
        [Segment::Key(root), ..] if root == "trigger" => Ok(()),
        [Segment::Key(root), Segment::Key(k)]
            if root == "execution" && EXECUTION_KEYS.contains(&k.as_str()) =>
        {
            Ok(())
        }
        [Segment::Key(root), Segment::Key(id), rest @ ..] if root == "nodes" => {
            if !index.contains_key(id.as_str()) {
                return Err(format!(
                    "`{{{{ {r} }}}}`: {}",
                    crate::plan::unknown_node(id, index)
                ));
            }
            match rest.first() {
                Some(Segment::Key(f)) if NODE_FIELDS.contains(&f.as_str()) => Ok(()),
                _ => Err(format!(
                    "`{{{{ {r} }}}}`: expected `nodes.{id}.` followed by one of {}",
                    NODE_FIELDS.join(", ")
                )),
            }
        }
        _ => Err(format!(
            "`{{{{ {r} }}}}`: `output` may use `trigger`, `nodes.<id>.output` and `execution`"
        )),
    }
}

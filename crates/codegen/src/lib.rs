//! flowrun's codegen: from a workflow file to one Python script.
//!
//! `source` parses JSON/YAML into the [`model`], `plan` validates it and orders its nodes,
//! `params` maps each node type to what its runtime handler reads, and `render` writes the
//! script from `templates/` and `runtime/`, with every user value going through [`pyliteral`].
//! This crate knows workflows and scripts; it spawns no process and touches no database.

// Errors (a `Diagnostic`) are returned once per invalid file: their size does not matter, and
// boxing them would only add noise.
#![allow(clippy::result_large_err)]

mod code_refs;
mod convert;
mod diagnostic;
mod json;
mod locate;
pub mod mock;
pub mod model;
mod node_types;
mod params;
mod plan;
mod prices;
pub mod pyliteral;
pub mod render;
mod settings;
mod shell;
pub mod source;
pub mod subflow;
pub mod template;
mod yaml;
mod yaml_errors;

pub use convert::did_you_mean;
pub use diagnostic::{Diagnostic, Diagnostics, in_json_terms};
pub use json::{apply_defaults, value_kind};
pub use locate::{Seg, path_text};
pub use mock::{Mock, MockOutcome};
pub use model::Workflow;
pub use plan::Plan;
pub use prices::{unpriced_llm_nodes, unpriced_message};
pub use render::{Pin, PinStatus, RenderOptions, Script, render, render_fresh, script_key};
pub use source::{
    Format, MAX_FILE_BYTES, NodeProblem, Source, load_file, may_be_workflow, parse_str,
    read_text_file, yaml_too_deep,
};
pub use yaml::yaml_to_json;
pub use yaml_errors::syntax_error as yaml_syntax_error;

/// Parses and validates, with every diagnostic located in the file.
pub fn compile(source: &Source) -> Result<Plan, Diagnostics> {
    let mut plan = compile_shallow(source)?;
    subflow::resolve(source, &mut plan)?;
    Ok(plan)
}

/// Compiles a workflow without reading the child files its `workflow` nodes name (their params
/// keep the paths as written): for looking at a stored definition, whose files may be gone.
pub fn compile_shallow(source: &Source) -> Result<Plan, Diagnostics> {
    plan::plan(&source.workflow).map_err(|d| source.locate(d))
}

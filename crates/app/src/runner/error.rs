//! Why a run could not start, as types: each front end words them for its own users (the CLI
//! with its flags and exit codes, the HTTP API with statuses and fields); the messages here name
//! no flag and no endpoint.

use crate::agents::NeededAgent;
use crate::inputs::InputError;
use crate::python::PythonError;
use crate::requirements::Missing;
use flowrun_codegen::Diagnostics;
use flowrun_store::StoreError;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    Input(#[from] InputError),
    /// An output was given for a node the workflow does not have.
    #[error("the workflow has no node '{node}'; its nodes are: {}", .nodes.join(", "))]
    UnknownPin { node: String, nodes: Vec<String> },
    #[error("no node '{node}' to pause before; nodes are: {}", .nodes.join(", "))]
    UnknownBreakpoint { node: String, nodes: Vec<String> },
    #[error("{0}")]
    Python(#[from] PythonError),
    /// The cache could not be written, a managed environment not installed, …
    #[error("{0}")]
    Environment(String),
    #[error("{}", unbound_message(.0))]
    Unbound(Vec<Unbound>),
    #[error("{}", missing_message(.0))]
    MissingPackages(Vec<Missing>),
    /// Agent CLIs that `agent` nodes run and that are not installed (or not where the nodes
    /// say): nothing was spawned.
    #[error("{}", missing_agents_message(.0))]
    MissingAgents(Vec<NeededAgent>),
    #[error("cannot record the execution: {0}")]
    Store(#[from] StoreError),
}

/// A connection that a node needs and nothing binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbound {
    pub connection: String,
    pub env: String,
    pub nodes: Vec<String>,
}

/// One message naming every unbound connection and the variable that binds it.
fn unbound_message(list: &[Unbound]) -> String {
    let mut s = if list.len() == 1 {
        "a connection is not bound:".to_string()
    } else {
        format!("{} connections are not bound:", list.len())
    };
    for u in list {
        let nodes: Vec<String> = u.nodes.iter().map(|n| format!("'{n}'")).collect();
        s.push_str(&format!(
            "\n  {}: set {} (used by node{} {})",
            u.connection,
            u.env,
            if u.nodes.len() == 1 { "" } else { "s" },
            nodes.join(", ")
        ));
    }
    s
}

fn missing_message(list: &[Missing]) -> String {
    let mut s = if list.len() == 1 {
        "the workflow needs a Python package that is not installed:".to_string()
    } else {
        "the workflow needs Python packages that are not installed:".to_string()
    };
    for m in list {
        s.push_str(&format!("\n  {} ({})", m.requirement, m.reason));
    }
    s
}

/// One message naming each missing agent CLI, the nodes that need it and how to install it.
fn missing_agents_message(list: &[NeededAgent]) -> String {
    let mut s = if list.len() == 1 {
        "an agent CLI that the workflow runs is not installed:".to_string()
    } else {
        format!(
            "{} agent CLIs that the workflow runs are not installed:",
            list.len()
        )
    };
    for m in list {
        let nodes: Vec<String> = m.nodes.iter().map(|n| format!("'{n}'")).collect();
        let place = if m.command.contains('/') {
            "no executable file there"
        } else {
            "not found on PATH"
        };
        s.push_str(&format!(
            "\n  {} ({}, for node{} {}): {place}; install it with `npm install -g {}`, or give the node's `command` the path of the executable",
            m.command,
            m.name,
            if m.nodes.len() == 1 { "" } else { "s" },
            nodes.join(", "),
            m.npm_package
        ));
    }
    s
}

/// The `pip install` command line that installs what is missing into the interpreter itself.
pub fn pip_install_command(list: &[Missing]) -> String {
    let reqs: Vec<String> = list
        .iter()
        .map(|m| format!("'{}'", m.requirement))
        .collect();
    format!("python3 -m pip install {}", reqs.join(" "))
}

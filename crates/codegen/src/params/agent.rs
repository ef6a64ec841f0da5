//! The params of an `agent` node: each CLI's options as it spells them, checked against what
//! that CLI has.

use super::*;

/// An `agent` node: the CLI's options as it spells them, checked against what each CLI has.
pub(super) fn agent(c: &mut Compiler<'_>, wf: &Workflow, n: &AgentNode) -> Data {
    let cli = agent_cli(&n.agent);
    if cli.is_none() {
        let names: Vec<&str> = AGENT_CLIS.iter().map(|a| a.agent).collect();
        c.error(
            "agent",
            format!("unknown agent '{}'; one of: {}", n.agent, names.join(", ")),
        );
    }
    let agent = n.agent.as_str();
    if n.max_turns.is_some() && agent != "claude_code" {
        c.error(
            "max_turns",
            format!("{agent} has no command-line option for a turn limit (only claude_code has: --max-turns); set it in the CLI's own settings"),
        );
    }
    if !n.allowed_tools.is_empty() && agent == "codex" {
        c.error(
            "allowed_tools",
            "codex has no allowed-tools option; limit what it may do with `permission_mode` (its --sandbox: read-only, workspace-write, danger-full-access)",
        );
    }
    match &n.command {
        Some(cmd) if cmd.trim().is_empty() => c.error(
            "command",
            "must name the executable (a name found on PATH, or a path)",
        ),
        Some(cmd) if cmd.contains("{{") => c.error(
            "command",
            "the executable is not templated (it is checked before anything runs); give a name or a path",
        ),
        _ => {}
    }
    if n.permission_mode
        .as_deref()
        .is_some_and(|m| m.trim().is_empty())
    {
        c.error("permission_mode", "must not be empty");
    }
    let prompt = c.text("prompt", &n.prompt);
    let cwd = n.cwd.as_ref().map(|s| c.text("cwd", s));
    let model = n.model.as_ref().map(|s| c.text("model", s));
    let resume = n
        .resume_session
        .as_ref()
        .map(|s| c.text("resume_session", s));
    let args = Data::List(
        n.args
            .iter()
            .enumerate()
            .map(|(i, s)| c.text(&format!("args[{i}]"), s))
            .collect(),
    );
    let env = c.value("env", &Value::Object(n.env.clone()));
    let conns = connections(c, wf, &n.connections);
    // The agent gets the connections it names and no others: every other declared one is
    // removed from its environment (the child may hold it for another node).
    let hidden: Vec<Data> = wf
        .connections
        .iter()
        .filter(|(name, _)| !n.connections.contains(name))
        .map(|(_, conn)| Data::from(conn.env.as_str()))
        .collect();
    let prices = cli
        .and_then(|a| crate::prices::models(a.provider))
        .map(|m| Data::from(&Value::Object(m.clone())))
        .unwrap_or(Data::Null);
    let texts = |v: &[String]| Data::List(v.iter().map(|s| Data::from(s.as_str())).collect());
    let mut params = vec![
        ("agent", Data::from(agent)),
        ("command", Data::from(n.executable())),
        ("prompt", prompt),
        ("cwd", opt(cwd)),
        ("model", opt(model)),
        ("max_turns", opt(n.max_turns)),
        ("permission_mode", opt(n.permission_mode.as_deref())),
        ("allowed_tools", texts(&n.allowed_tools)),
        ("args", args),
        ("env", env),
        ("connections", conns),
        ("hidden_env", Data::List(hidden)),
        ("prices", prices),
    ];
    // Present only when the node resumes: then an empty or null value is an error at run time
    // (a new session would silently lose the context the workflow meant to keep).
    if let Some(r) = resume {
        params.push(("resume_session", r));
    }
    Data::Dict(
        params
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

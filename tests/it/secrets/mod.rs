//! Connections and secrets end to end: binding (environment, `--env`, `--env-file`), the exit-3
//! refusal before anything is spawned when a connection is unbound, and redaction: a bound
//! secret that nodes deliberately print, log, return, raise with, send and echo back appears
//! nowhere in the database files or in any CLI output, replaced by `[REDACTED:VAR]`.

mod binding;
mod redaction;

use crate::support::llm_server::{Reply, Server};
use serde_json::{Value, json};
use std::path::Path;

pub(super) const SECRET: &str = "sk-test-7f3a9c1e5b";
pub(super) const MARK: &str = "[REDACTED:MY_SECRET]";

pub(super) fn groq_server() -> Server {
    Server::start(|_| Reply::openai_chat("llama-3.1-8b-instant", "hello", 3, 1))
}

/// trigger → a code node that leaves a marker file (proof the script ran) → an llm node.
pub(super) fn groq_workflow(marker: &Path) -> Value {
    json!({
        "id": "needs-groq",
        "connections": { "groq": { "env": "GROQ_API_KEY" } },
        "nodes": [
            { "id": "trigger", "type": "trigger" },
            { "id": "touch", "type": "code",
              "code": format!("open({:?}, 'w').write('ran')\nreturn 1", marker.display().to_string()) },
            { "id": "ask", "type": "llm", "provider": "groq", "model": "llama-3.1-8b-instant",
              "connection": "groq", "after": ["touch"],
              "messages": [ { "role": "user", "content": "hi" } ] }
        ]
    })
}

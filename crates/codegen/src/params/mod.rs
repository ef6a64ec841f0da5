//! Per node type: which of its fields the runtime gets, and which of them are templates.
//!
//! Each node type's arm turns the typed node into the `params` data its runtime handler reads
//! (see `runtime/nodes/<type>.py`), parsing every templated string on the way. The references
//! found are returned with the field they sit in, for validation and for ordering edges.

mod agent;
use crate::diagnostic::Diagnostic;
use crate::model::*;
use crate::pyliteral::{Data, dict};
use crate::template::{self, Reference};
use agent::agent;
use serde_json::Value;

/// The runtime params of one node and the template references inside them.
pub(crate) struct Params {
    pub data: Data,
    /// `(field path, reference)` for every `{{ }}` in a templated field.
    pub references: Vec<(String, Reference)>,
}

struct Compiler<'a> {
    node: &'a str,
    references: Vec<(String, Reference)>,
    errors: Vec<Diagnostic>,
}

impl Compiler<'_> {
    /// A templated string: plain text stays a string, anything with `{{` becomes a template.
    fn text(&mut self, field: &str, s: &str) -> Data {
        match template::parse(s) {
            Ok(t) if t.is_literal() => Data::Str(s.to_string()),
            Ok(t) => {
                for r in t.references() {
                    self.references.push((field.to_string(), r.clone()));
                }
                Data::Template(t)
            }
            Err(e) => {
                self.errors.push(
                    Diagnostic::new(format!("invalid template: {e}"))
                        .node(self.node)
                        .field(field),
                );
                Data::Null
            }
        }
    }

    /// A JSON value whose strings, at any depth, are templates.
    fn value(&mut self, field: &str, v: &Value) -> Data {
        match v {
            Value::String(s) => self.text(field, s),
            Value::Array(items) => Data::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(&format!("{field}[{i}]"), item))
                    .collect(),
            ),
            Value::Object(map) => Data::Dict(
                map.iter()
                    .map(|(k, item)| (k.clone(), self.value(&format!("{field}.{k}"), item)))
                    .collect(),
            ),
            other => Data::from(other),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(message).node(self.node).field(field));
    }
}

/// `{"name", "env"}` of a declared connection, or an error naming the field.
fn connection(c: &mut Compiler<'_>, wf: &Workflow, field: &str, name: &str) -> Data {
    match wf.connections.get(name) {
        Some(conn) => dict([
            ("name", Data::from(name)),
            ("env", Data::from(conn.env.as_str())),
        ]),
        None => {
            let declared: Vec<&str> = wf.connections.keys().map(String::as_str).collect();
            let hint = if declared.is_empty() {
                format!(
                    "declare it: \"connections\": {{\"{name}\": {{\"env\": \"{}_API_KEY\"}}}}",
                    name.to_uppercase().replace('-', "_")
                )
            } else {
                format!("declared connections: {}", declared.join(", "))
            };
            c.error(
                field,
                format!("connection '{name}' is not declared in `connections`; {hint}"),
            );
            Data::Null
        }
    }
}

/// A `connections` list: `{"name", "env"}` of each.
fn connections(c: &mut Compiler<'_>, wf: &Workflow, names: &[String]) -> Data {
    Data::List(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| connection(c, wf, &format!("connections[{i}]"), name))
            .collect(),
    )
}

/// Base URL defaults and the variables that override them, per provider.
pub(crate) fn llm_endpoint(provider: &str) -> (&'static str, &'static str) {
    match provider {
        "groq" => ("https://api.groq.com/openai/v1", "FLOWRUN_GROQ_BASE_URL"),
        "openai" => ("https://api.openai.com/v1", "FLOWRUN_OPENAI_BASE_URL"),
        "anthropic" => ("https://api.anthropic.com", "FLOWRUN_ANTHROPIC_BASE_URL"),
        _ => ("", "FLOWRUN_OPENAI_COMPATIBLE_BASE_URL"),
    }
}

fn opt<T: Into<Data>>(v: Option<T>) -> Data {
    v.map(Into::into).unwrap_or(Data::Null)
}

/// Compiles a node's type-specific fields into runtime params.
pub(crate) fn compile(node: &Node, wf: &Workflow) -> Result<Params, Vec<Diagnostic>> {
    let mut c = Compiler {
        node: &node.id,
        references: Vec::new(),
        errors: Vec::new(),
    };
    let data = match &node.kind {
        NodeKind::Trigger(_) => Data::Dict(vec![]),
        NodeKind::Set(n) => dict([(
            "fields",
            c.value("fields", &Value::Object(n.fields.clone())),
        )]),
        NodeKind::Template(n) => {
            let t = c.text("template", &n.template);
            dict([("template", t)])
        }
        NodeKind::Code(n) => {
            let mut entries = vec![("code".to_string(), Data::Str(n.code.clone()))];
            if !n.connections.is_empty() {
                entries.push((
                    "connections".to_string(),
                    connections(&mut c, wf, &n.connections),
                ));
            }
            if let Some(cwd) = &n.cwd {
                entries.push(("cwd".to_string(), c.text("cwd", cwd)));
            }
            Data::Dict(entries)
        }
        NodeKind::Condition(n) => {
            let cond = condition(&mut c, &n.condition);
            dict([
                ("if", cond),
                (
                    "then",
                    Data::List(n.then.iter().map(|s| Data::Str(s.clone())).collect()),
                ),
                (
                    "else",
                    Data::List(n.otherwise.iter().map(|s| Data::Str(s.clone())).collect()),
                ),
            ])
        }
        NodeKind::Delay(n) => {
            let ms = match &n.ms {
                Value::Number(num) if num.as_f64().is_some_and(|f| f >= 0.0) => {
                    Data::Number(num.clone())
                }
                Value::String(s) if s.contains("{{") => c.text("ms", s),
                _ => {
                    c.error("ms", "must be a number of milliseconds ≥ 0 or a template");
                    Data::Null
                }
            };
            dict([("ms", ms)])
        }
        NodeKind::Workflow(n) => {
            let inputs = match &n.inputs {
                Value::Object(_) => c.value("inputs", &n.inputs),
                Value::String(s) if s.contains("{{") => c.text("inputs", s),
                _ => {
                    c.error("inputs", "an object, or a template yielding one");
                    Data::Null
                }
            };
            // `crate::subflow` replaces the path with the child file's absolute one.
            dict([
                ("workflow", Data::from(n.workflow.as_str())),
                ("inputs", inputs),
            ])
        }
        NodeKind::HttpRequest(n) => {
            let method = n.method.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                .contains(&method.as_str())
            {
                c.error("method", format!("unknown HTTP method '{}'", n.method));
            }
            if n.json.is_some() && n.body.is_some() {
                c.error("body", "give either `json` or `body`, not both");
            }
            let url = c.text("url", &n.url);
            let headers = c.value("headers", &Value::Object(n.headers.clone()));
            let query = c.value("query", &Value::Object(n.query.clone()));
            let json = n.json.as_ref().map(|j| c.value("json", j));
            let body = n.body.as_ref().map(|b| c.text("body", b));
            let conn = match &n.connection {
                Some(name) => connection(&mut c, wf, "connection", name),
                None => Data::Null,
            };
            let auth = match &n.auth {
                Some(a) => {
                    if !["bearer", "header", "query", "basic"].contains(&a.kind.as_str()) {
                        c.error(
                            "auth.type",
                            format!(
                                "unknown auth type '{}'; one of: bearer, header, query, basic",
                                a.kind
                            ),
                        );
                    }
                    if n.connection.is_none() {
                        c.error("auth", "`auth` needs a `connection` that holds the secret");
                    }
                    dict([
                        ("type", Data::from(a.kind.as_str())),
                        ("name", opt(a.name.as_deref())),
                    ])
                }
                None => dict([("type", Data::from("bearer")), ("name", Data::Null)]),
            };
            let mut entries = vec![
                ("method".to_string(), Data::Str(method)),
                ("url".to_string(), url),
                ("headers".to_string(), headers),
                ("query".to_string(), query),
            ];
            if let Some(j) = json {
                entries.push(("json".to_string(), j));
            }
            if let Some(b) = body {
                entries.push(("body".to_string(), b));
            }
            entries.extend([
                (
                    "follow_redirects".to_string(),
                    Data::Bool(n.follow_redirects),
                ),
                (
                    "max_redirects".to_string(),
                    Data::from(u64::from(n.max_redirects.unwrap_or(10))),
                ),
                (
                    "allow_status".to_string(),
                    Data::List(
                        n.allow_status
                            .iter()
                            .map(|s| Data::from(*s as u64))
                            .collect(),
                    ),
                ),
                ("connection".to_string(), conn),
                ("auth".to_string(), auth),
                (
                    "max_body_bytes".to_string(),
                    Data::from(n.max_body_bytes.unwrap_or(10 << 20)),
                ),
            ]);
            Data::Dict(entries)
        }
        NodeKind::Llm(n) => {
            if !LLM_PROVIDERS.contains(&n.provider.as_str()) {
                c.error(
                    "provider",
                    format!(
                        "unknown provider '{}'; one of: {}",
                        n.provider,
                        LLM_PROVIDERS.join(", ")
                    ),
                );
            }
            // `openai_compatible` without `base_url` takes FLOWRUN_OPENAI_COMPATIBLE_BASE_URL at
            // run time (the node fails naming the variable when neither is there).
            if n.messages.is_none() && n.prompt.is_none() {
                c.error("messages", "give `messages` or `prompt`");
            }
            if let Some(t) = n.temperature {
                if !(0.0..=2.0).contains(&t) {
                    c.error("temperature", "must be between 0 and 2");
                }
            }
            let messages = match &n.messages {
                Some(list) => {
                    for (i, m) in list.iter().enumerate() {
                        let ok = m.as_object().is_some_and(|o| {
                            o.get("role")
                                .and_then(Value::as_str)
                                .is_some_and(|r| ["system", "user", "assistant"].contains(&r))
                                && o.contains_key("content")
                                && o.keys().all(|k| k == "role" || k == "content")
                        });
                        if !ok {
                            c.error(&format!("messages[{i}]"), "a message is {\"role\": \"system\"|\"user\"|\"assistant\", \"content\": \"…\"}");
                        }
                    }
                    c.value("messages", &Value::Array(list.clone()))
                }
                None => Data::Null,
            };
            let prompt = n.prompt.as_ref().map(|p| c.text("prompt", p));
            let system = n.system.as_ref().map(|p| c.text("system", p));
            let conn = connection(&mut c, wf, "connection", &n.connection);
            let (default_base, base_env) = llm_endpoint(&n.provider);
            let price = n
                .price
                .or_else(|| crate::prices::lookup(&n.provider, &n.model));
            if price.is_none() && wf.max_cost_usd.is_some() {
                c.error("model", crate::prices::unpriced_message(&n.model));
            }
            let mut params = dict([
                ("provider", Data::from(n.provider.as_str())),
                ("model", Data::from(n.model.as_str())),
                ("messages", messages),
                ("prompt", opt(prompt)),
                ("system", opt(system)),
                ("temperature", opt(n.temperature)),
                ("max_tokens", opt(n.max_tokens)),
                ("connection", conn),
                ("base_url", opt(n.base_url.as_deref())),
                ("base_url_env", Data::from(base_env)),
                ("default_base_url", Data::from(default_base)),
                (
                    "price",
                    match price {
                        Some(p) => dict([
                            ("input_per_mtok", Data::from(p.input_per_mtok)),
                            ("output_per_mtok", Data::from(p.output_per_mtok)),
                        ]),
                        None => Data::Null,
                    },
                ),
                ("max_retries", Data::from(n.max_retries.unwrap_or(2) as u64)),
            ]);
            // Only when asked: the scripts of other llm nodes stay as they were.
            if n.stream == Some(true) {
                if let Data::Dict(entries) = &mut params {
                    entries.push(("stream".to_string(), Data::Bool(true)));
                }
            }
            params
        }
        NodeKind::Command(n) => {
            match (&n.argv, &n.command, n.shell) {
                (Some(_), None, false) | (None, Some(_), true) => {}
                (Some(_), _, true) => c.error(
                    "argv",
                    "with `shell: true` give the shell line in `command`, not `argv`",
                ),
                (None, Some(_), false) => c.error(
                    "shell",
                    "`command` is a shell line: set `shell: true` (or use `argv`)",
                ),
                (Some(_), Some(_), false) => c.error(
                    "command",
                    "give `argv` or (with `shell: true`) `command`, not both",
                ),
                (None, None, _) => c.error("argv", "give `argv` (program and arguments)"),
            }
            if n.argv.as_ref().is_some_and(|a| a.is_empty()) {
                c.error("argv", "must name at least the program");
            }
            let argv = n.argv.as_ref().map(|a| {
                Data::List(
                    a.iter()
                        .enumerate()
                        .map(|(i, s)| c.text(&format!("argv[{i}]"), s))
                        .collect(),
                )
            });
            let command = n.command.as_ref().map(|s| c.text("command", s));
            // Each value in a shell line is quoted for where it sits (see `shell.rs`).
            let quoting = match &command {
                Some(Data::Template(t)) if n.shell => match crate::shell::quoting(t) {
                    Ok(q) => Data::List(q.iter().map(|q| Data::from(q.name())).collect()),
                    Err(errors) => {
                        for e in errors {
                            c.error("command", format!("{e}: its value cannot be quoted there; put it in `env` and write \"$NAME\" in the line instead"));
                        }
                        Data::Null
                    }
                },
                _ => Data::Null,
            };
            let cwd = n.cwd.as_ref().map(|s| c.text("cwd", s));
            let env = c.value("env", &Value::Object(n.env.clone()));
            let stdin = n.stdin.as_ref().map(|s| c.value("stdin", s));
            let conns = connections(&mut c, wf, &n.connections);
            dict([
                ("argv", opt(argv)),
                ("command", opt(command)),
                ("command_quoting", quoting),
                ("shell", Data::Bool(n.shell)),
                ("cwd", opt(cwd)),
                ("env", env),
                ("stdin", opt(stdin)),
                ("allow_failure", Data::Bool(n.allow_failure)),
                (
                    "max_output_bytes",
                    Data::from(n.max_output_bytes.unwrap_or(1 << 20)),
                ),
                ("connections", conns),
            ])
        }
        NodeKind::Agent(n) => agent(&mut c, wf, n),
    };
    if c.errors.is_empty() {
        Ok(Params {
            data,
            references: c.references,
        })
    } else {
        Err(c.errors)
    }
}

fn condition(c: &mut Compiler<'_>, v: &Value) -> Data {
    condition_at(c, "if", v)
}

/// A condition — a template's truthiness, or `{op, left, right}` — in field `at`.
fn condition_at(c: &mut Compiler<'_>, at: &str, v: &Value) -> Data {
    let Value::Object(map) = v else {
        return c.value(at, v);
    };
    if !map.contains_key("op") {
        return c.value(at, v);
    }
    for key in map.keys() {
        if !["op", "left", "right"].contains(&key.as_str()) {
            c.error(
                &format!("{at}.{key}"),
                format!("unknown field `{key}` in a comparison; expected `op`, `left`, `right`"),
            );
        }
    }
    let op = match map.get("op") {
        Some(Value::String(op)) if CONDITION_OPS.contains(&op.as_str()) => op.clone(),
        other => {
            c.error(
                &format!("{at}.op"),
                format!(
                    "unknown operator {}; one of: {}",
                    other.map(|v| v.to_string()).unwrap_or_default(),
                    CONDITION_OPS.join(", ")
                ),
            );
            String::new()
        }
    };
    let left = c.value(
        &format!("{at}.left"),
        map.get("left").unwrap_or(&Value::Null),
    );
    let right = c.value(
        &format!("{at}.right"),
        map.get("right").unwrap_or(&Value::Null),
    );
    dict([("op", Data::Str(op)), ("left", left), ("right", right)])
}

/// A node's `for_each` and `repeat.until`, compiled like its params: `(for_each, until)` data
/// (null when the node has none) and the references in each, with their field.
pub(crate) struct Modifiers {
    pub for_each: Data,
    pub until: Data,
    pub references: Vec<(String, Reference)>,
}

/// Compiles the workflow's `output`: a value whose strings, at any depth, are templates. Returns
/// it and its references (by field path), or what is wrong with it.
pub(crate) fn workflow_output(v: &Value) -> Result<Params, Vec<Diagnostic>> {
    let mut c = Compiler {
        node: "",
        references: Vec::new(),
        errors: Vec::new(),
    };
    let data = c.value("output", v);
    if c.errors.is_empty() {
        Ok(Params {
            data,
            references: c.references,
        })
    } else {
        // Not a node's field: the diagnostics name none.
        Err(c
            .errors
            .into_iter()
            .map(|mut d| {
                d.node = None;
                d
            })
            .collect())
    }
}

/// Compiles the templates of a node's `for_each` and `repeat.until`.
pub(crate) fn modifiers(node: &Node) -> Result<Modifiers, Vec<Diagnostic>> {
    let mut c = Compiler {
        node: &node.id,
        references: Vec::new(),
        errors: Vec::new(),
    };
    let for_each = match &node.for_each {
        Some(fe) => match &fe.items {
            Value::String(text) => match c.text("for_each", text) {
                Data::Str(_) => {
                    c.error(
                        "for_each",
                        "expected a template yielding a list (such as \"{{ trigger.urls }}\") or a list",
                    );
                    Data::Null
                }
                d => d,
            },
            Value::Array(_) => c.value("for_each", &fe.items),
            _ => {
                c.error(
                    "for_each",
                    "expected a template yielding a list (such as \"{{ trigger.urls }}\") or a list",
                );
                Data::Null
            }
        },
        None => Data::Null,
    };
    let until = match &node.repeat {
        Some(r) => condition_at(&mut c, "repeat.until", &r.until),
        None => Data::Null,
    };
    if c.errors.is_empty() {
        Ok(Modifiers {
            for_each,
            until,
            references: c.references,
        })
    } else {
        Err(c.errors)
    }
}

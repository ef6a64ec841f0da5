//! The table of node types: the one place where a node type is declared.
//!
//! Everything codegen knows per node type by name derives from the table at the bottom of this
//! file: [`NodeKind`] (a node's typed, type-specific fields), [`NodeType`] (the type alone), the
//! type names (`type:` in a workflow file, the key the runtime registers its handler under), the
//! dispatch that parses a node's fields by its `type`, the runtime file a script embeds for the
//! type, and whether the type applies `timeout_ms` to its own call. A type missing from one of
//! these cannot happen: they are all generated from its one line.
//!
//! To add a node type `foo`:
//!
//! 1. write its handler, `runtime/nodes/foo.py`, registered as `HANDLERS["foo"]` (see
//!    `runtime/README.md`); the table embeds `runtime/nodes/<name>.py`, so a missing file is a
//!    compile error;
//! 2. define its fields, `FooNode`, in [`crate::model`] (`#[serde(deny_unknown_fields)]`);
//! 3. add its line to the table: `Foo(FooNode) = "foo", times_own_call: false;`, in the place
//!    the docs list it (the order of "one of: …" in messages);
//! 4. build: the compiler then names the matches that need an arm for it, `params::compile`
//!    (what the handler gets as `params`) and `NodeKind::connections`.

use crate::diagnostic::Diagnostic;
use crate::model::*;
use serde::Serialize;
use serde_json::Value;

/// Declares the node types; see the table below and the module doc.
macro_rules! node_types {
    ($(
        $variant:ident($fields:ty) = $name:literal, times_own_call: $times_own_call:literal;
    )*) => {
        /// The type-specific part of a node, serialized with its type name as `type`.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum NodeKind {
            $(
                #[serde(rename = $name)]
                $variant($fields),
            )*
        }

        /// A node type, without a node's fields.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum NodeType {
            $($variant,)*
        }

        impl NodeType {
            /// Every node type, in the order the docs list them.
            pub(crate) const ALL: &[NodeType] = &[$(NodeType::$variant),*];

            /// The name a workflow file gives in `type`, and the runtime's `HANDLERS` key.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(NodeType::$variant => $name,)*
                }
            }

            pub(crate) fn from_name(name: &str) -> Option<NodeType> {
                match name {
                    $($name => Some(NodeType::$variant),)*
                    _ => None,
                }
            }

            /// Does the type apply `timeout_ms` to its own call, so that the call can fail
            /// inside the node (and be retried) before the runner's hard deadline?
            pub(crate) fn times_own_call(self) -> bool {
                match self {
                    $(NodeType::$variant => $times_own_call,)*
                }
            }

            /// The type's runtime handler, `runtime/nodes/<name>.py`, embedded at build time.
            pub(crate) fn runtime_source(self) -> &'static str {
                match self {
                    $(NodeType::$variant => {
                        include_str!(concat!("../../../runtime/nodes/", $name, ".py"))
                    })*
                }
            }

            /// Parses a node's type-specific fields (everything but the common ones) as this
            /// type's; `node` names the node in the diagnostic.
            // Errors here happen once per bad file; their size does not matter.
            #[allow(clippy::result_large_err)]
            pub(crate) fn parse_fields(
                self,
                fields: Value,
                node: &str,
            ) -> Result<NodeKind, Diagnostic> {
                match self {
                    $(NodeType::$variant => {
                        crate::source::typed(fields, node).map(NodeKind::$variant)
                    })*
                }
            }
        }

        impl NodeKind {
            pub(crate) fn node_type(&self) -> NodeType {
                match self {
                    $(NodeKind::$variant(_) => NodeType::$variant,)*
                }
            }
        }
    };
}

node_types! {
    Trigger(TriggerNode) = "trigger", times_own_call: false;
    Set(SetNode) = "set", times_own_call: false;
    Template(TemplateNode) = "template", times_own_call: false;
    Code(CodeNode) = "code", times_own_call: false;
    HttpRequest(HttpRequestNode) = "http_request", times_own_call: true;
    Llm(LlmNode) = "llm", times_own_call: true;
    Command(CommandNode) = "command", times_own_call: true;
    Condition(ConditionNode) = "condition", times_own_call: false;
    Delay(DelayNode) = "delay", times_own_call: false;
    Workflow(WorkflowNode) = "workflow", times_own_call: false;
    Agent(AgentNode) = "agent", times_own_call: true;
}

impl NodeType {
    /// Every type name, comma-separated in table order (for "one of: …" in messages).
    pub(crate) fn names() -> String {
        let names: Vec<&str> = NodeType::ALL.iter().map(|t| t.name()).collect();
        names.join(", ")
    }
}

impl NodeKind {
    /// The node's type name (`http_request`, ...).
    pub fn type_name(&self) -> &'static str {
        self.node_type().name()
    }

    /// Node types that apply `timeout_ms` to their own call, so it can fail inside the node
    /// (and be retried) before the runner's hard deadline.
    pub fn times_own_call(&self) -> bool {
        self.node_type().times_own_call()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashSet;

    /// The smallest valid node of each type (exhaustive: a new type needs one here too).
    fn minimal(t: NodeType) -> Value {
        let fields = match t {
            NodeType::Trigger => json!({}),
            NodeType::Set => json!({"fields": {"a": 1}}),
            NodeType::Template => json!({"template": "hi {{ trigger.name }}"}),
            NodeType::Code => json!({"code": "return 1"}),
            NodeType::HttpRequest => json!({"url": "http://localhost/"}),
            NodeType::Llm => json!({"provider": "groq", "model": "m", "connection": "c",
                                    "prompt": "hi"}),
            NodeType::Command => json!({"argv": ["true"]}),
            NodeType::Condition => json!({"if": "{{ trigger.ok }}"}),
            NodeType::Delay => json!({"ms": 1}),
            NodeType::Workflow => json!({"workflow": "./child.yaml"}),
            NodeType::Agent => json!({"agent": "claude_code", "prompt": "hi"}),
        };
        let mut node = json!({"id": "n", "type": t.name()});
        node.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        node
    }

    #[test]
    fn every_type_parses_compiles_and_renders() {
        for &t in NodeType::ALL {
            let wf = json!({"id": "w", "connections": {"c": {"env": "C_KEY"}},
                            "nodes": [minimal(t)]});
            let source = crate::source::from_value(wf, "<test>")
                .unwrap_or_else(|d| panic!("{}: {d}", t.name()));
            let kind = &source.workflow.nodes[0].kind;
            assert_eq!(kind.node_type(), t);
            assert_eq!(kind.type_name(), t.name());
            // Shallow: the `workflow` node's child file does not exist here (tests/it has those).
            let plan =
                crate::compile_shallow(&source).unwrap_or_else(|d| panic!("{}: {d}", t.name()));
            assert_eq!(plan.node_types(), vec![t.name()]);
            let script = crate::render(&plan, &Default::default());
            assert!(script.text.contains(t.runtime_source().trim_end()));
        }
    }

    #[test]
    fn every_type_has_its_runtime_handler() {
        for &t in NodeType::ALL {
            let registers = format!("HANDLERS[\"{}\"] = ", t.name());
            assert!(
                t.runtime_source().contains(&registers),
                "runtime/nodes/{}.py does not register its handler",
                t.name()
            );
        }
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        let names: HashSet<&str> = NodeType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), NodeType::ALL.len());
        for &t in NodeType::ALL {
            assert_eq!(NodeType::from_name(t.name()), Some(t));
        }
        assert_eq!(NodeType::from_name("Set"), None);
        assert_eq!(
            NodeType::names(),
            "trigger, set, template, code, http_request, llm, command, condition, delay, workflow, agent"
        );
    }

    #[test]
    fn the_types_that_time_their_own_call() {
        let timed: Vec<&str> = NodeType::ALL
            .iter()
            .filter(|t| t.times_own_call())
            .map(|t| t.name())
            .collect();
        assert_eq!(timed, ["http_request", "llm", "command", "agent"]);
    }

    #[test]
    fn kinds_serialize_with_their_type_name() {
        let kind = NodeKind::HttpRequest(serde_json::from_value(json!({"url": "u"})).unwrap());
        assert_eq!(serde_json::to_value(&kind).unwrap()["type"], "http_request");
    }
}

//! Codegen of a 500-node workflow: `parse_str` + `compile` (validate and plan) + `render`, the
//! work `flowrun run` does before it can spawn anything when the script is not cached yet.
//! Target: ≤ 10 ms.
//!
//! The workflow is a mix of `set`, `template`, `code` and `condition` nodes, each referencing
//! the trigger and earlier nodes through templates, so validation and ordering have real edges
//! to check. Run: `cargo bench --bench codegen` (or `bench/run.sh`).

use flowrun_codegen::{Format, RenderOptions, compile, parse_str, render_fresh};
use serde_json::{Value, json};

fn main() {
    // The workflow is valid and renders: a benchmark of an error path would measure nothing.
    let text = workflow(500);
    let source = parse_str(&text, Format::Json, "w500.json").expect("w500 parses");
    let plan = compile(&source).expect("w500 validates");
    let script = render_fresh(&plan, &RenderOptions::default());
    assert!(script.text.len() > 10_000);
    divan::main();
}

/// A workflow of `n` nodes, as JSON text.
fn workflow(n: usize) -> String {
    let mut nodes = vec![json!({ "id": "trigger", "type": "trigger" })];
    let mut i = 1;
    while i < n {
        let prev = nodes.last().expect("a node")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let id = format!("n{i:03}");
        let node: Value = match i % 10 {
            // A condition choosing between the next two nodes.
            9 if i + 2 < n => {
                let cond = json!({
                    "id": id, "type": "condition",
                    "if": { "op": "gt", "left": "{{ trigger.n }}", "right": 5 },
                    "then": [format!("n{:03}", i + 1)], "else": [format!("n{:03}", i + 2)]
                });
                nodes.push(cond);
                i += 1;
                continue;
            }
            0..=3 => json!({
                "id": id, "type": "set", "name": format!("Set {i}"),
                "fields": {
                    "name": "{{ trigger.name }}",
                    "n": "{{ trigger.n }}",
                    "from": format!("{{{{ nodes.{prev}.status }}}}"),
                    "label": format!("step {i} after {{{{ nodes.{prev}.status }}}} for {{{{ trigger.name }}}}"),
                    "nested": { "list": [1, 2, "{{ execution.id }}"], "flag": true }
                }
            }),
            4..=6 => json!({
                "id": id, "type": "template",
                "template": format!("Hello {{{{ trigger.name }}}}, step {i}: {{{{ nodes.{prev}.status }}}} — \"quoted\" 'text' \\ backslash")
            }),
            _ => json!({
                "id": id, "type": "code",
                "code": format!("x = trigger['n']\nprev = nodes['{prev}']\nlog('step {i}')\nreturn {{'i': {i}, 'x': x * 2, 'ok': prev is not None}}"),
                "timeout_ms": 5000,
                "retry": { "max_attempts": 2, "backoff_ms": 10, "factor": 2 },
                "on_error": "continue"
            }),
        };
        nodes.push(node);
        i += 1;
    }
    serde_json::to_string_pretty(&json!({
        "id": "w500",
        "name": "Codegen benchmark: 500 nodes",
        "inputs": { "type": "object", "properties": {
            "name": { "type": "string", "default": "bench" },
            "n": { "type": "integer", "default": 10 } } },
        "nodes": nodes
    }))
    .expect("serializes")
}

/// parse + validate/plan + render of the 500-node workflow.
#[divan::bench(sample_count = 50)]
fn codegen_500_nodes(b: divan::Bencher) {
    let text = workflow(500);
    b.bench(|| {
        let source = parse_str(divan::black_box(&text), Format::Json, "w500.json").expect("parses");
        let plan = compile(&source).expect("validates");
        render_fresh(&plan, &RenderOptions::default())
    });
}

/// The steps on their own, to see which one dominates.
mod steps {
    use super::*;

    #[divan::bench(sample_count = 50)]
    fn parse(b: divan::Bencher) {
        let text = workflow(500);
        b.bench(|| parse_str(divan::black_box(&text), Format::Json, "w500.json").expect("parses"));
    }

    #[divan::bench(sample_count = 50)]
    fn validate_and_plan(b: divan::Bencher) {
        let source = parse_str(&workflow(500), Format::Json, "w500.json").expect("parses");
        b.bench(|| compile(divan::black_box(&source)).expect("validates"));
    }

    #[divan::bench(sample_count = 50)]
    fn render_script(b: divan::Bencher) {
        let source = parse_str(&workflow(500), Format::Json, "w500.json").expect("parses");
        let plan = compile(&source).expect("validates");
        b.bench(|| render_fresh(divan::black_box(&plan), &RenderOptions::default()));
    }
}

//! Cost limits (`max_cost_usd`): no metered call starts past the limit, in items, and across
//! sub-workflows, whose spending (and their children's) counts in their parent's total.

use crate::support::llm_server::{Reply, Server};
use crate::support::*;
use serde_json::{Value, json};

/// Three LLM calls in a chain; each answer costs $0.05 (1M prompt tokens of
/// llama-3.1-8b-instant at $0.05/M).
/// An LLM call of $0.05 (see [`priced_server`]) after the nodes `after`.
fn ask(id: &str, after: &[&str]) -> Value {
    json!({ "id": id, "type": "llm", "provider": "groq", "model": "llama-3.1-8b-instant",
            "connection": "groq", "after": after,
            "messages": [ { "role": "user", "content": "hi" } ] })
}

fn llm_chain(env: &Env, extra: Value) -> std::path::PathBuf {
    let mut wf = json!({ "id": "costly", "connections": { "groq": { "env": "GROQ_API_KEY" } },
        "nodes": [ask("a", &[]), ask("b", &["a"]), ask("c", &["b"])] });
    for (k, v) in extra.as_object().unwrap() {
        wf[k] = v.clone();
    }
    env.write_workflow("costly.json", &wf)
}

fn priced_server() -> Server {
    Server::start(|_| Reply::openai_chat("llama-3.1-8b-instant", "ok", 1_000_000, 0))
}

#[test]
fn no_llm_call_starts_past_the_cost_limit() {
    let env = Env::new();
    let server = priced_server();
    let wf = llm_chain(&env, json!({ "max_cost_usd": 0.08, "warn_cost_usd": 0.04 }));
    let out = run_priced(&env, &wf, &server, &[]);
    assert_code(&out, 1, "run past the limit");
    // a ($0.05) and b (started at $0.05 < $0.08) ran; c would start at $0.10.
    assert_eq!(
        server.requests().len(),
        2,
        "the call after the limit was made"
    );
    let id = env.only_execution_id();
    let e = env.execution(&id);
    let err = e.error.clone().unwrap();
    assert_eq!(err["type"], "CostLimit");
    assert_eq!(err["node"], "c");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("$0.100000") && msg.contains("$0.080000"),
        "{msg}"
    );
    // The warning: one log line, printed by the progress display too.
    let warnings: Vec<_> = env
        .events(&id)
        .into_iter()
        .filter(|x| x.kind == "log" && x.data["level"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].data["node"], "a");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warn_cost_usd"));

    // --max-cost-usd overrides the workflow's: only the first call.
    let out = run_priced(&env, &wf, &server, &["--max-cost-usd", "0.01"]);
    assert_code(&out, 1, "run with a lower limit");
    assert_eq!(server.requests().len(), 3);
}

/// Items past the limit: the execution's error is CostLimit, as for a node (it was ItemsFailed).
#[test]
fn items_refused_by_the_cost_limit_end_the_execution_as_cost_limit() {
    let env = Env::new();
    let server = priced_server();
    let wf = env.write_workflow(
        "items.json",
        &json!({ "id": "items", "max_cost_usd": 0.08,
            "connections": { "groq": { "env": "GROQ_API_KEY" } },
            "nodes": [{ "id": "ask", "type": "llm", "provider": "groq",
                "model": "llama-3.1-8b-instant", "connection": "groq", "for_each": [1, 2, 3],
                "messages": [ { "role": "user", "content": "hi {{ item }}" } ] }] }),
    );
    let out = run_priced(&env, &wf, &server, &[]);
    assert_code(&out, 1, "items past the limit");
    assert_eq!(server.requests().len(), 2, "{}", describe(&out));
    let err = env.execution(&env.only_execution_id()).error.unwrap();
    assert_eq!(err["type"], "CostLimit", "{err}");
}

/// Calls side by side all start below the limit and all finish; a total that ends past it is
/// not a success: the execution ends CostLimit, naming the total, though no call was refused.
#[test]
fn calls_side_by_side_that_end_past_the_limit_fail_the_execution() {
    let env = Env::new();
    // Slow answers: the three calls are under way together, each started at $0.
    let server = Server::start(|_| {
        Reply::openai_chat("llama-3.1-8b-instant", "ok", 1_000_000, 0)
            .delay(std::time::Duration::from_millis(500))
    });
    let wf = env.write_workflow(
        "fan.json",
        &json!({ "id": "fan", "max_cost_usd": 0.08,
            "connections": { "groq": { "env": "GROQ_API_KEY" } },
            "nodes": [{ "id": "ask", "type": "llm", "provider": "groq",
                "model": "llama-3.1-8b-instant", "connection": "groq", "for_each": [1, 2, 3],
                "max_concurrent": 3,
                "messages": [ { "role": "user", "content": "hi {{ item }}" } ] }] }),
    );
    let out = run_priced(&env, &wf, &server, &[]);
    assert_code(&out, 1, "calls past the limit");
    let id = env.only_execution_id();
    let items = env.items(&id, "ask");
    assert!(
        items.iter().all(|(_, r)| r.status == "success"),
        "{items:?}"
    );
    assert_eq!(server.requests().len(), 3, "{}", describe(&out));
    let e = env.execution(&id);
    assert_eq!(e.status, "error", "{e:?}");
    let err = e.error.clone().unwrap();
    assert_eq!(err["type"], "CostLimit", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("$0.150000") && msg.contains("$0.080000"),
        "{msg}"
    );
    // Exactly the limit is within it.
    let out = run_priced(&env, &wf, &server, &["--max-cost-usd", "0.15"]);
    assert_code(&out, 0, "three calls of $0.05 within $0.15");
}

/// A sub-workflow spends from its parent's budget: it runs with what is left as its limit, and
/// what it spent counts in the parent's total (a child with three $0.05 calls under a parent's
/// $0.08 made all three, and the parent went on).
#[test]
fn a_sub_workflow_spends_from_its_parents_cost_limit() {
    let env = Env::new();
    let server = priced_server();
    llm_chain(&env, json!({})); // costly.json: three calls, no limit of its own
    let parent = env.write_workflow(
        "parent.json",
        &json!({ "id": "parent", "max_cost_usd": 0.08, "nodes": [
            { "id": "child", "type": "workflow", "workflow": "./costly.json" },
            { "id": "after", "type": "code", "code": "return 'ran'" }
        ]}),
    );
    let out = run_priced(&env, &parent, &server, &["--inherit-env"]);
    assert_code(&out, 1, "a child past its parent's limit");
    // The child's a ($0.05) and b (started at $0.05 < $0.08) ran; c would start at $0.10.
    assert_eq!(server.requests().len(), 2, "{}", describe(&out));
    let db = env.db();
    let (parent_id, parent_error): (String, String) = db
        .query_row(
            "SELECT id, error FROM executions WHERE parent_id IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let err: Value = serde_json::from_str(&parent_error).unwrap();
    assert_eq!(err["type"], "CostLimit", "{err}");
    assert_eq!(err["node"], "child", "{err}");
    let child_error: String = db
        .query_row(
            "SELECT error FROM executions WHERE parent_id = ?1",
            [&parent_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(child_error.contains("$0.080000"), "{child_error}");
    assert!(
        env.nodes(&parent_id)
            .iter()
            .all(|n| n.node_id != "after" || n.status != "success"),
        "a node ran past the limit"
    );

    // A parent that spent its budget in a child starts no other metered call (nor child).
    let twice = env.write_workflow(
        "twice.json",
        &json!({ "id": "twice", "max_cost_usd": 0.04, "nodes": [
            { "id": "one", "type": "workflow", "workflow": "./single.json" },
            { "id": "two", "type": "workflow", "workflow": "./single.json" }
        ]}),
    );
    let mut single =
        serde_json::from_str::<Value>(&std::fs::read_to_string(env.path("costly.json")).unwrap())
            .unwrap();
    single["id"] = json!("single");
    single["nodes"] = json!([single["nodes"][0].clone()]);
    env.write_workflow("single.json", &single);
    let out = run_priced(&env, &twice, &server, &["--inherit-env"]);
    assert_code(&out, 1, "the second child past the limit");
    assert_eq!(server.requests().len(), 3, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CostLimit"),
        "{}",
        describe(&out)
    );
}

/// The stand-in's address and key, for `run_with`.
fn groq_env(server: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("FLOWRUN_GROQ_BASE_URL", server.url("/openai/v1")),
        ("GROQ_API_KEY", "gsk-cost-limit-test-key".to_string()),
    ]
}

fn run_priced(
    env: &Env,
    wf: &std::path::Path,
    server: &Server,
    extra: &[&str],
) -> std::process::Output {
    let vars = groq_env(server);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.run_with(wf, "{}", &vars, extra)
}

/// A child refused a call by its own, lower limit fails its node, not its parent: on_error
/// decides (the parent, with no limit of its own, ended CostLimit).
#[test]
fn a_childs_own_cost_limit_fails_its_node_only() {
    let env = Env::new();
    let server = priced_server();
    llm_chain(&env, json!({ "max_cost_usd": 0.04 })); // its second call is refused
    let parent = env.write_workflow(
        "parent.json",
        &json!({ "id": "parent", "nodes": [
            { "id": "child", "type": "workflow", "workflow": "./costly.json", "on_error": "continue" },
            { "id": "after", "type": "code", "code": "return 'ran'" }
        ]}),
    );
    for extra in [&[][..], &["--max-cost-usd", "100"][..]] {
        let mut args = vec!["--inherit-env"];
        args.extend_from_slice(extra);
        let out = run_priced(&env, &parent, &server, &args);
        assert_success(&out, "a parent whose child hit its own limit");
        assert_eq!(stdout(&out).trim(), "\"ran\"", "{}", describe(&out));
    }
}

/// What a child's children spend counts too: a grandchild's call left the parent believing
/// nothing was spent.
#[test]
fn a_grandchilds_spending_counts_against_the_top_limit() {
    let env = Env::new();
    let server = priced_server();
    llm_chain(&env, json!({}));
    let mut single: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("costly.json")).unwrap()).unwrap();
    single["id"] = json!("single");
    single["nodes"] = json!([single["nodes"][0].clone()]);
    env.write_workflow("single.json", &single);
    env.write_workflow(
        "middle.json",
        &json!({ "id": "middle", "connections": { "groq": { "env": "GROQ_API_KEY" } },
        "nodes": [
            { "id": "key", "type": "code", "connections": ["groq"], "code": "return 1" },
            { "id": "down", "type": "workflow", "workflow": "./single.json" }
        ]}),
    );
    let mut top = single.clone();
    top["id"] = json!("top");
    top["max_cost_usd"] = json!(0.08);
    let call = single["nodes"][0].clone();
    let (mut b, mut c) = (call.clone(), call);
    b["id"] = json!("b");
    b["after"] = json!(["mid"]);
    c["id"] = json!("c");
    c["after"] = json!(["b"]);
    top["nodes"] = json!([{ "id": "mid", "type": "workflow", "workflow": "./middle.json" }, b, c]);
    let wf = env.write_workflow("top.json", &top);
    let out = run_priced(&env, &wf, &server, &["--inherit-env"]);
    // The grandchild's $0.05, then b at $0.05 (< $0.08): c would start at $0.10.
    assert_code(&out, 1, "past the limit");
    assert_eq!(server.requests().len(), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("CostLimit"), "{}", describe(&out));
}

/// Children side by side share what is left: each of two got all of it, and together they
/// spent twice the limit.
#[test]
fn children_side_by_side_share_what_is_left() {
    let env = Env::new();
    let server = priced_server();
    llm_chain(&env, json!({}));
    let wf = env.write_workflow(
        "fan.json",
        &json!({ "id": "fan", "max_cost_usd": 0.1, "nodes": [
            { "id": "each", "type": "workflow", "workflow": "./costly.json",
              "for_each": [1, 2], "max_concurrent": 2, "fail_fast": false }
        ]}),
    );
    let out = run_priced(&env, &wf, &server, &["--inherit-env"]);
    // Each child may spend $0.05: its first call, not its second.
    assert_code(&out, 1, "past the limit");
    assert_eq!(server.requests().len(), 2, "{}", describe(&out));
    let err = env
        .execution(
            &env.db()
                .query_row(
                    "SELECT id FROM executions WHERE parent_id IS NULL",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .unwrap(),
        )
        .error
        .unwrap();
    assert_eq!(err["type"], "CostLimit", "{err}");
}

/// A resume spends from the limit of the run it continues: the outputs it reuses count what
/// they cost when they were made — an LLM call's, and a sub-workflow's with its calls — so the
/// call a fresh run would refuse is refused after the resume too.
#[test]
fn a_resume_counts_what_its_reused_outputs_cost() {
    let env = Env::new();
    let server = priced_server();
    llm_chain(&env, json!({})); // costly.json: three calls of $0.05
    let gate = env.path("gate");
    let wf = env.write_workflow(
        "gated.json",
        &json!({ "id": "gated", "max_cost_usd": 0.2,
        "connections": { "groq": { "env": "GROQ_API_KEY" } },
        "nodes": [
            { "id": "child", "type": "workflow", "workflow": "./costly.json" },
            ask("a", &["child"]),
            { "id": "gate", "type": "code", "after": ["a"], "code": format!(
                "import os\nif not os.path.exists({:?}):\n    raise ValueError('closed')\nreturn 1",
                gate.display().to_string()) },
            ask("d", &["gate"]),
        ]}),
    );
    // $0.15 in the child, a starts at $0.15 and ends at $0.20; the gate fails.
    let out = run_priced(&env, &wf, &server, &["--inherit-env"]);
    assert_code(&out, 1, "the gate is closed");
    assert_eq!(server.requests().len(), 4, "{}", describe(&out));
    let first = env
        .execution_ids()
        .into_iter()
        .find(|id| env.execution(id).workflow_id == "gated")
        .unwrap();
    std::fs::write(&gate, "").unwrap();
    let resumed = env
        .command()
        .args(["resume", &first, "--inherit-env"])
        .envs(groq_env(&server))
        .output()
        .unwrap();
    assert_code(&resumed, 1, "d would start at $0.20");
    assert_eq!(server.requests().len(), 4, "{}", describe(&resumed));
    let last = env.execution_ids().pop().unwrap();
    let err = env.execution(&last).error.unwrap();
    assert_eq!(err["type"], "CostLimit", "{err}");
    assert_eq!(err["node"], "d", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("$0.200000"),
        "{err}"
    );
}

/// A cost limit holds only if every call counts: an `llm` node whose model has no price (not in
/// the table, no `price`) is refused under one — the workflow's, or one given for the run —
/// where its calls counted nothing and the run ended `success` past the limit.
#[test]
fn a_cost_limit_refuses_a_model_without_a_price() {
    let env = Env::new();
    let node = |price: Option<Value>| {
        let mut n = json!({ "id": "ask", "type": "llm", "provider": "groq",
            "model": "my-unpriced-model", "connection": "groq",
            "messages": [ { "role": "user", "content": "hi" } ] });
        if let Some(p) = price {
            n["price"] = p;
        }
        n
    };
    let wf = |limit: Option<f64>, price: Option<Value>| {
        let mut w = json!({ "id": "unpriced", "connections": { "groq": { "env": "GROQ_API_KEY" } },
            "nodes": [node(price)] });
        if let Some(l) = limit {
            w["max_cost_usd"] = json!(l);
        }
        w
    };
    let limited = env.write_workflow("limited.json", &wf(Some(0.01), None));
    let out = env.cmd(["validate", limited.to_str().unwrap()]);
    assert_code(&out, 2, "validate under a limit");
    let err = stderr(&out);
    assert!(
        err.contains("'my-unpriced-model' has no price") && err.contains("ask"),
        "{err}"
    );
    let free = env.write_workflow("free.json", &wf(None, None));
    assert_code(
        &env.cmd(["validate", free.to_str().unwrap()]),
        0,
        "no limit",
    );
    let out = env.cmd(["run", free.to_str().unwrap(), "--max-cost-usd", "0.01"]);
    assert_code(&out, 2, "a limit for the run");
    assert!(
        stderr(&out).contains("node 'ask': model 'my-unpriced-model'"),
        "{}",
        describe(&out)
    );
    let priced = env.write_workflow(
        "priced.json",
        &wf(
            Some(0.01),
            Some(json!({ "input_per_mtok": 0, "output_per_mtok": 0 })),
        ),
    );
    assert_code(
        &env.cmd(["validate", priced.to_str().unwrap()]),
        0,
        "priced by the node",
    );
}

/// A sub-workflow's limit is its share of what its parent has left: its calls stop there, but
/// a total past the share is the parent's to answer for, against its own limit. Two children
/// (room for four side by side) spending $0.10 each under a parent's $0.30 succeed.
#[test]
fn children_past_their_share_but_within_the_parents_limit_succeed() {
    let env = Env::new();
    let server = priced_server();
    env.write_workflow(
        "two.json",
        &json!({ "id": "two", "connections": { "groq": { "env": "GROQ_API_KEY" } },
            "nodes": [ask("a", &[]), ask("b", &["a"])] }),
    );
    let parent = env.write_workflow(
        "fan.json",
        &json!({ "id": "fan", "max_cost_usd": 0.3, "nodes": [
            { "id": "each", "type": "workflow", "workflow": "./two.json",
              "for_each": [1, 2], "max_concurrent": 4 } ]}),
    );
    let out = run_priced(&env, &parent, &server, &["--inherit-env"]);
    assert_code(&out, 0, "$0.20 spent of $0.30");
    assert_eq!(server.requests().len(), 4, "{}", describe(&out));
}

/// Costs add up in binary floating point: eight calls of $0.05 are 0.39999999999999997, which
/// has reached a limit of $0.40: the ninth is refused, not made.
#[test]
fn a_limit_reached_by_a_sum_of_costs_is_reached_whatever_the_rounding() {
    let env = Env::new();
    let server = priced_server();
    let wf = env.write_workflow(
        "nine.json",
        &json!({ "id": "nine", "max_cost_usd": 0.4,
            "connections": { "groq": { "env": "GROQ_API_KEY" } },
            "nodes": [{ "id": "ask", "type": "llm", "provider": "groq",
                "model": "llama-3.1-8b-instant", "connection": "groq",
                "for_each": [1, 2, 3, 4, 5, 6, 7, 8, 9],
                "messages": [ { "role": "user", "content": "hi {{ item }}" } ] }] }),
    );
    let out = run_priced(&env, &wf, &server, &[]);
    assert_code(&out, 1, "the ninth call is past the limit");
    assert_eq!(server.requests().len(), 8, "{}", describe(&out));
}

/// A resume of a resume counts a reused `for_each` of sub-workflows item by item, each where it
/// ran: the first resume reused three items from the first run and ran one itself.
#[test]
fn a_resume_of_a_resume_counts_every_reused_item_where_it_ran() {
    let env = Env::new();
    let server = priced_server();
    let (open1, open2) = (env.path("open1"), env.path("open2"));
    let gate = |id: &str, file: &std::path::Path, when: &str| {
        json!({ "id": id, "type": "code", "code": format!(
            "import os\nif {when} and not os.path.exists({:?}):\n    raise ValueError('closed')\nreturn 1",
            file.display().to_string()) })
    };
    let mut check = gate("check", &open1, "trigger['n'] == 2");
    check["after"] = json!([]);
    env.write_workflow(
        "item.json",
        &json!({ "id": "item", "connections": { "groq": { "env": "GROQ_API_KEY" } },
            "nodes": [check, ask("ask", &["check"])] }),
    );
    let mut second = gate("gate", &open2, "True");
    second["after"] = json!(["each"]);
    let wf = env.write_workflow(
        "top.json",
        &json!({ "id": "top", "max_cost_usd": 0.2,
        "connections": { "groq": { "env": "GROQ_API_KEY" } },
        "nodes": [
            { "id": "each", "type": "workflow", "workflow": "./item.json",
              "for_each": [0, 1, 2, 3], "fail_fast": false, "inputs": { "n": "{{ item }}" } },
            second,
            ask("last", &["gate"]),
        ]}),
    );
    assert_code(
        &run_priced(&env, &wf, &server, &["--inherit-env"]),
        1,
        "item 2 fails",
    );
    let resume = |what: &str| {
        let top = env
            .execution_ids()
            .into_iter()
            .rfind(|id| env.execution(id).workflow_id == "top")
            .unwrap();
        let out = env
            .command()
            .args(["resume", &top, "--inherit-env"])
            .envs(groq_env(&server))
            .output()
            .unwrap();
        assert_code(&out, 1, what);
    };
    std::fs::write(&open1, "").unwrap();
    resume("the gate fails");
    assert_eq!(server.requests().len(), 4, "three items, then the fourth");
    std::fs::write(&open2, "").unwrap();
    // $0.20 spent by the four children: `last` would start at the limit.
    resume("the last call is past the limit");
    assert_eq!(server.requests().len(), 4);
    let last = env.execution_ids().pop().unwrap();
    let err = env.execution(&last).error.unwrap();
    assert_eq!(err["type"], "CostLimit", "{err}");
    assert_eq!(err["node"], "last", "{err}");
}

//! What an editor needs from `flowrun serve` beyond running: validating an unsaved definition,
//! saving and deleting workflows, deleting executions, per-request `env`/`secrets`/`cwd`, the
//! hooks for what is not supported yet, the server-wide event stream, pending nodes in a running
//! record, the output in `execution_end`, and the OpenAPI description.

use crate::support::serve::{Message, Server, World};
use serde_json::{Value, json};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn slow() -> Value {
    crate::serve::slow()
}

/// A workflow with an input schema, a connection and nodes that read things.
fn editor_workflow() -> Value {
    json!({
        "id": "greet",
        "name": "Greeter",
        "inputs": {"type": "object", "properties": {
            "name": {"type": "string", "title": "Name", "default": "Ada"},
            "times": {"type": "integer", "default": 2}}, "required": ["name"]},
        "connections": {"svc": {"env": "FLOWRUN_EDITOR_TEST_KEY_UNSET"}},
        "nodes": [
            {"id": "hello", "name": "Say hello", "type": "template", "template": "Hello, {{ trigger.name }}"},
            {"id": "call", "type": "http_request", "method": "GET", "url": "http://127.0.0.1:9/{{ nodes.hello.output }}",
             "headers": {"Authorization": "Bearer {{ trigger.token }}"}, "connection": "svc"}
        ]
    })
}

#[test]
fn validate_reports_everything_and_runs_nothing() {
    let w = World::new();
    let s = w.serve(&[]);
    let r = s.post("/api/validate", &json!({"workflow": editor_workflow()}));
    assert_eq!(r.status, 200, "{}", r.text);
    let v = &r.body;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["diagnostics"], json!([]));
    assert_eq!(v["defaults"], json!({"name": "Ada", "times": 2}));
    assert_eq!(v["inputs"]["required"], json!(["name"]));
    assert_eq!(v["connections"][0]["env"], "FLOWRUN_EDITOR_TEST_KEY_UNSET");
    assert_eq!(v["connections"][0]["bound"], false);
    assert_eq!(v["ready"], false, "a connection is missing");
    assert_eq!(v["agents"], json!([]));
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["id"], "hello");
    assert_eq!(nodes[0]["name"], "Say hello");
    assert_eq!(nodes[0]["reads"], json!(["trigger.name"]));
    assert_eq!(
        nodes[1]["reads"],
        json!(["nodes.hello.output", "trigger.token"])
    );
    assert_eq!(nodes[1]["after"], json!(["hello"]));
    assert_eq!(nodes[1]["env"], json!(["FLOWRUN_EDITOR_TEST_KEY_UNSET"]));

    // A connection bound by the request's secrets counts as bound (its value is not kept).
    let r = s.post(
        "/api/validate",
        &json!({"workflow": editor_workflow(), "secrets": {"FLOWRUN_EDITOR_TEST_KEY_UNSET": "x"}}),
    );
    assert_eq!(r.body["connections"][0]["bound"], true);
    assert_eq!(r.body["ready"], true);

    // Invalid: located diagnostics, in the layout of JSON.stringify(definition, null, 2).
    let bad = json!({"id": "bad", "nodes": [
        {"id": "a", "type": "set", "fields": {"v": "{{ nodes.ghost.output }}"}}]});
    let r = s.post("/api/validate", &json!({"workflow": bad}));
    assert_eq!(r.status, 200);
    assert_eq!(r.body["valid"], false);
    let d = &r.body["diagnostics"][0];
    assert_eq!(d["node"], "a");
    assert_eq!(d["field"], "fields.v");
    assert!(
        d["line"].as_u64().unwrap() > 1 && d["column"].as_u64().unwrap() > 1,
        "{d}"
    );
    assert!(d["message"].as_str().unwrap().contains("ghost"));
    // A node's misspelt field, while being typed: the nodes as written stay listed, and the
    // diagnostic says which node (by position too) and what was meant.
    let typing = json!({"id": "t", "nodes": [
        {"id": "b", "type": "code", "code": "return 1", "timout_ms": 5},
        {"id": "b", "type": "delay", "ms": 1}]});
    let r = s.post("/api/validate", &json!({"workflow": typing}));
    assert_eq!(r.body["valid"], false, "{}", r.text);
    let ids: Vec<&str> = r.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["code", "delay"], "{}", r.text);
    let d = &r.body["diagnostics"][0];
    assert_eq!(d["node_index"], 0, "{}", r.text);
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `timeout_ms`?"),
        "{}",
        r.text
    );
    // Nothing was run or recorded.
    let list = s.get("/api/executions");
    assert_eq!(list.body["executions"], json!([]));
    // No definition: 400.
    assert_eq!(s.post("/api/validate", &json!({})).status, 400);
}

#[test]
fn workflows_are_saved_atomically_and_deleted() {
    let w = World::new();
    let s = w.serve(&[]);
    let def = json!({"id": "saved", "name": "Saved", "nodes": [
        {"id": "t", "type": "template", "template": "v1"}]});
    let r = s.put("/api/workflows/saved", &json!({"workflow": def}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["id"], "saved");
    let file = w.workflows().join("saved.json");
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(on_disk, def);
    assert_eq!(s.get("/api/workflows/saved").body["definition"], def);

    // Replaced in the same file; a run uses the new version.
    let mut v2 = def.clone();
    v2["nodes"][0]["template"] = json!("v2");
    let r = s.put("/api/workflows/saved", &json!({"workflow": v2}));
    assert_eq!(r.status, 200, "{}", r.text);
    let id = s.start("/api/workflows/saved/executions", &json!({}));
    assert_eq!(s.wait_final(&id)["output"]["text"], "v2");

    // Invalid or mismatched: refused, the file unchanged.
    let mut bad = v2.clone();
    bad["nodes"][0]["type"] = json!("nope");
    let r = s.put("/api/workflows/saved", &json!({"workflow": bad}));
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_workflow");
    let r = s.put("/api/workflows/other", &json!({"workflow": v2}));
    assert_eq!(r.status, 400, "{}", r.text);
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(on_disk, v2);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(w.workflows())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["saved.json"]);

    let r = s.delete("/api/workflows/saved");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!file.exists());
    assert_eq!(s.get("/api/workflows/saved").status, 404);
    assert_eq!(s.delete("/api/workflows/saved").status, 404);

    // Other data in the directory (served with --workflows . in a project) is left alone, by
    // PUT and DELETE alike; a workflow that does not parse yet is still one.
    let package = w.save_text("package.json", "{\"name\": \"my-app\"}\n");
    let compose = w.save_text("docker-compose.yml", "services: {}\n");
    let r = s.put(
        "/api/workflows/package",
        &json!({"workflow": {"id": "package", "nodes": [{"id": "t", "type": "template", "template": "x"}]}}),
    );
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (409, Some("not_a_workflow")),
        "{}",
        r.text
    );
    let r = s.delete("/api/workflows/docker-compose");
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (409, Some("not_a_workflow")),
        "{}",
        r.text
    );
    assert_eq!(
        std::fs::read_to_string(&package).unwrap(),
        "{\"name\": \"my-app\"}\n"
    );
    assert!(compose.exists());
    // Nor is text that does not parse as a workflow's would: JSON with comments, several YAML
    // documents.
    let tsconfig = w.save_text("tsconfig.json", "{\n  // strict\n  \"strict\": true,\n}\n");
    let manifest = w.save_text("deploy.yaml", "kind: Service\n---\nkind: Deployment\n");
    for id in ["tsconfig", "deploy"] {
        let r = s.delete(&format!("/api/workflows/{id}"));
        assert_eq!(r.status, 409, "{id}: {}", r.text);
    }
    assert!(tsconfig.exists() && manifest.exists());
    w.save_text("half.json", "{\"id\": \"half\", \"nodes\": [");
    assert_eq!(s.delete("/api/workflows/half").status, 200);
    // A save under an id whose file holds another workflow does not replace it.
    let other = json!({"id": "b", "nodes": [{"id": "t", "type": "template", "template": "b"}]});
    let a_file = w.save("a.json", &other);
    let mine = json!({"id": "a", "nodes": [{"id": "t", "type": "template", "template": "a"}]});
    let r = s.put("/api/workflows/a", &json!({"workflow": mine}));
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (409, Some("file_exists")),
        "{}",
        r.text
    );
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&a_file).unwrap()).unwrap();
    assert_eq!(kept, other);
}

#[test]
fn executions_are_deleted_but_not_while_running() {
    let w = World::new();
    let s = w.serve(&[]);
    let done = s.start(
        "/api/executions",
        &json!({"workflow": crate::serve::quick()}),
    );
    s.wait_final(&done);
    let running = s.start("/api/executions", &json!({"workflow": slow()}));
    s.wait_until(&running, "running its delay", |r| {
        r["nodes"][1]["status"] == "running"
    });
    let r = s.delete(&format!("/api/executions/{running}"));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"], "not_finished");
    // A segment that is not UTF-8 is refused as every error is: in JSON.
    for path in [
        "/api/executions/%FF",
        "/api/workflows/%FF",
        "/api/executions/%FF/events",
    ] {
        let r = s.get(path);
        assert_eq!(
            (r.status, &r.body["error"]),
            (400, &json!("bad_request")),
            "{path}: {}",
            r.text
        );
    }

    let r = s.delete(&format!("/api/executions/{}", &done[..8]));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], done);
    assert_eq!(s.get(&format!("/api/executions/{done}")).status, 404);
    assert_eq!(s.delete(&format!("/api/executions/{done}")).status, 404);
    assert_eq!(
        s.post(
            &format!("/api/executions/{running}/stop?wait=true"),
            &json!({})
        )
        .status,
        200
    );
}

#[test]
fn a_running_record_lists_every_planned_node_and_the_end_carries_the_output() {
    let w = World::new();
    let s = w.serve(&[]);
    let mut wf = slow();
    wf["nodes"][1]["name"] = json!("Wait a while");
    wf["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "after", "type": "template", "template": "x"}));
    let id = s.start("/api/executions", &json!({"workflow": wf}));
    let rec = s.wait_until(&id, "its delay running", |r| {
        r["nodes"][1]["status"] == "running"
    });
    let statuses: Vec<&str> = rec["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success", "running", "pending"], "{rec}");
    assert_eq!(rec["nodes"][2]["node_id"], "after");
    assert_eq!(
        rec["plan"][1],
        json!({"id": "sleep", "type": "delay", "name": "Wait a while"})
    );
    s.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
    // Ended: no pending entries (the node never ran; the plan still lists it).
    let rec = s.get(&format!("/api/executions/{id}")).body;
    assert_eq!(rec["nodes"].as_array().unwrap().len(), 2, "{rec}");

    let id = s.start(
        "/api/executions",
        &json!({"workflow": crate::serve::quick(), "trigger": {"n": 7}}),
    );
    let msgs = s.events(&id, None).read_to_end();
    let end = msgs
        .iter()
        .rev()
        .find(|m| m.event == "execution_end")
        .unwrap();
    assert_eq!(end.json()["output"], json!({"n": 7}));
}

#[test]
fn env_secrets_and_cwd_per_request_and_secrets_never_stored() {
    let w = World::new();
    let s = w.serve(&[]);
    const SECRET: &str = "per-request-secret-5d1f0a9e77";
    let dir = w.path("workdir");
    std::fs::create_dir(&dir).unwrap();
    let wf = json!({
        "id": "envy",
        "connections": {"api": {"env": "EDITOR_API_KEY"}},
        "nodes": [
            {"id": "show", "type": "code", "connections": ["api"], "code":
             "import os\nprint('key', os.environ['EDITOR_API_KEY'])\nreturn {'plain': os.environ.get('PLAIN'), 'key': os.environ['EDITOR_API_KEY'], 'cwd': os.getcwd(), 'trig': trigger['echo']}"}
        ]
    });
    let body = json!({"workflow": wf, "env": {"PLAIN": "visible"}, "secrets": {"EDITOR_API_KEY": SECRET},
                      "cwd": dir.display().to_string(), "trigger": {"echo": SECRET}});
    let r = s.post("/api/executions?wait=true", &body);
    assert_eq!(r.status, 200, "{}; {}", r.text, s.stderr());
    assert_eq!(r.body["status"], "success", "{}", r.text);
    let out = &r.body["output"];
    assert_eq!(out["plain"], "visible");
    assert_eq!(out["key"], "[REDACTED:EDITOR_API_KEY]");
    assert_eq!(out["trig"], "[REDACTED:EDITOR_API_KEY]");
    assert_eq!(
        std::fs::canonicalize(out["cwd"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(&dir).unwrap()
    );
    assert!(!r.text.contains(SECRET));
    // Never in the store's bytes: the database, its WAL and shared memory.
    let bytes = w.db_bytes();
    assert!(!bytes.is_empty());
    assert!(
        !bytes.windows(SECRET.len()).any(|b| b == SECRET.as_bytes()),
        "the secret is in the store's files"
    );

    // Without the secret the connection is unbound.
    let mut no_secret = body.clone();
    no_secret.as_object_mut().unwrap().remove("secrets");
    assert_eq!(s.post("/api/executions", &no_secret).status, 409);
    // What is refused, before anything runs.
    for (field, value, code) in [
        ("secrets", json!({"NOT_A_CONNECTION": "x"}), "bad_request"),
        ("env", json!({"FLOWRUN_MODE": "x"}), "bad_request"),
        ("cwd", json!("relative/dir"), "bad_request"),
        ("max_cost_usd", json!(-0.5), "bad_request"),
        ("break_before", json!(["no-such-node"]), "bad_request"),
    ] {
        let mut b = body.clone();
        b[field] = value;
        let r = s.post("/api/executions", &b);
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert_eq!(r.body["error"], code, "{field}: {}", r.text);
    }
    // A re-run takes them too.
    let first = s.get("/api/executions?limit=1").body["executions"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.post(
        &format!("/api/executions/{first}/rerun?wait=true"),
        &json!({"secrets": {"EDITOR_API_KEY": SECRET}, "env": {"PLAIN": "again"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["output"]["plain"], "again");
}

#[test]
fn features_pause_and_openapi() {
    let w = World::new();
    let s = w.serve(&[]);
    let info = s.get("/api").body;
    assert_eq!(info["features"]["pause"], true);
    assert_eq!(info["features"]["break_before"], true);
    assert_eq!(info["features"]["max_cost_usd"], true);
    assert_eq!(info["features"]["validate"], true);
    assert_eq!(info["features"]["save_workflows"], true);
    assert_eq!(info["features"]["logs"], true);
    let id = s.start(
        "/api/executions",
        &json!({"workflow": crate::serve::quick()}),
    );
    s.wait_final(&id);
    // An ended execution has nothing to pause.
    let r = s.post(&format!("/api/executions/{id}/pause"), &json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"], "not_running");
    assert_eq!(
        s.post("/api/executions/ffffffffffffffff/pause", &json!({}))
            .status,
        404
    );
    // A paused execution's error has no traceback, as no error flowrun makes itself has one: it
    // was `"traceback": ""`, in the record, the list and the stream's end.
    let id = s.start(
        "/api/executions",
        &json!({"workflow": crate::serve::quick(), "break_before": ["only"]}),
    );
    let rec = s.wait_final(&id);
    assert_eq!(rec["status"], "paused", "{rec}");
    let listed = &s.get("/api/executions?limit=1").body["executions"][0];
    let events = crate::serve::check_stream(&s.events(&id, None).read_to_end(), &id);
    for error in [
        &rec["error"],
        &listed["error"],
        &events.last().unwrap()["error"],
    ] {
        assert_eq!(error["type"], "Paused", "{error}");
        assert_eq!(error.get("traceback"), None, "{error}");
    }

    let r = s.get("/api/openapi.json");
    assert_eq!(r.status, 200);
    let doc = &r.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api", "get"),
        ("/api/validate", "post"),
        ("/api/events", "get"),
        ("/api/workflows", "get"),
        ("/api/workflows/{id}", "put"),
        ("/api/workflows/{id}", "delete"),
        ("/api/workflows/{id}/executions", "post"),
        ("/api/executions", "post"),
        ("/api/executions", "get"),
        ("/api/executions/{id}", "delete"),
        ("/api/executions/{id}/events", "get"),
        ("/api/executions/{id}/logs", "get"),
        ("/api/executions/{id}/stop", "post"),
        ("/api/executions/{id}/rerun", "post"),
        ("/api/executions/{id}/resume", "post"),
        ("/api/executions/{id}/pause", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
    }
    // Every request field the server takes is described.
    let run = &doc["components"]["schemas"]["RunRequest"]["properties"];
    for f in [
        "workflow",
        "trigger",
        "timeout_ms",
        "mode",
        "max_parallel",
        "env",
        "secrets",
        "cwd",
        "max_cost_usd",
        "break_before",
    ] {
        assert!(run[f].is_object(), "RunRequest.{f}");
    }
    assert_eq!(doc["info"]["version"], info["version"]);
    // Every status a record can have (a client with strict enums meets `paused` after a
    // breakpoint), and the errors every `{id}` operation can answer.
    let mut statuses: Vec<String> = flowrun_events::ExecStatus::ALL
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut described: Vec<String> = doc["components"]["schemas"]["ExecStatus"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    statuses.sort();
    described.sort();
    assert_eq!(described, statuses);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses") else {
                continue;
            };
            if path.starts_with("/api/executions/{id}") {
                for code in ["400", "404"] {
                    assert!(responses[code].is_object(), "{method} {path}: no {code}");
                }
            }
        }
    }
}

/// Reads an SSE stream on a thread, so a test can wait for a message with a deadline.
fn background(mut sse: crate::support::serve::Sse) -> mpsc::Receiver<Message> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(m) = sse.next_message() {
            if tx.send(m).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next message for which `f` holds (others are skipped), within 20 s.
fn next_where(rx: &mpsc::Receiver<Message>, what: &str, f: impl Fn(&Message) -> bool) -> Message {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) if f(&m) => return m,
            Ok(_) => {}
            Err(_) => panic!("no {what} on /api/events within 20 s"),
        }
    }
}

fn is(kind: &'static str, id: String) -> impl Fn(&Message) -> bool {
    move |m: &Message| m.event == kind && m.json()["id"] == id.as_str()
}

#[test]
fn the_server_wide_stream_follows_this_server_and_other_processes() {
    let w = World::new();
    let s: Server = w.serve(&[]);
    let sse = s.sse("/api/events", None);
    let rx = background(sse);
    // Started here.
    let id = s.start(
        "/api/executions",
        &json!({"workflow": crate::serve::quick(), "trigger": {"n": 1}}),
    );
    let start = next_where(&rx, "execution_start", is("execution_start", id.clone()));
    assert_eq!(start.id, None, "summaries are not numbered");
    assert_eq!(start.json()["workflow_id"], "quick");
    let end = next_where(&rx, "execution_end", is("execution_end", id.clone()));
    assert_eq!(end.json()["status"], "success");
    // Started by `flowrun run` in another process sharing the store.
    let file = w.write_workflow(
        "cli.json",
        &json!({"id": "from-cli", "nodes": [{"id": "t", "type": "template", "template": "x"}]}),
    );
    w.cli_ok(&["run", file.to_str().unwrap()]);
    let cli_id = s.get("/api/executions?workflow=from-cli").body["executions"][0]["id"]
        .as_str()
        .expect("the CLI's execution is in the store")
        .to_string();
    let m = next_where(
        &rx,
        "the CLI's execution_start",
        is("execution_start", cli_id.clone()),
    );
    assert_eq!(m.json()["workflow_id"], "from-cli");
    next_where(
        &rx,
        "the CLI's execution_end",
        is("execution_end", cli_id.clone()),
    );
    // Deleted here.
    assert_eq!(s.delete(&format!("/api/executions/{cli_id}")).status, 200);
    next_where(&rx, "execution_deleted", is("execution_deleted", cli_id));
}

/// The history an editor shows is the one `flowrun history` shows: a CI run's cases (`flowrun
/// test`, mode `test-suite`) are left out unless asked for.
#[test]
fn the_list_leaves_out_test_suites_unless_asked() {
    let w = World::new();
    let wf = w.save("quick.json", &crate::serve::quick());
    w.save_text(
        "quick.test.yaml",
        "workflow: ./quick.json\ncases:\n  - { name: a, trigger: { n: 1 } }\n  - { name: b, trigger: { n: 2 } }\n",
    );
    w.cli_ok(&["test", w.workflows().to_str().unwrap()]);
    w.cli_ok(&["run", wf.to_str().unwrap(), "--input", r#"{"n": 3}"#]);
    let s = w.serve(&[]);
    let r = s.get("/api/executions");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["total"], 1, "{}", r.text);
    assert_eq!(r.body["executions"][0]["mode"], "test");
    let r = s.get("/api/executions?test_suites=true");
    assert_eq!(r.body["total"], 3, "{}", r.text);
    assert_eq!(s.get("/api/executions?test_suites=yes").status, 400);
}

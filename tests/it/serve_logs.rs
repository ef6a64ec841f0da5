//! `GET /api/executions/{id}/logs`: an execution's log lines, of one node, item or iteration
//! when asked, a page at a time — the same lines, in the same form, as `flowrun logs --json`.

use crate::support::serve::World;
use crate::support::*;
use serde_json::{Value, json};

/// Every line of `path` (a logs URL without `after`), page after page; and the pages' sizes.
fn all_pages(s: &crate::support::serve::Server, path: &str) -> (Vec<Value>, Vec<usize>) {
    let (mut lines, mut sizes, mut after) = (Vec::new(), Vec::new(), 0);
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let r = s.get(&format!("{path}{sep}after={after}"));
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.body["logs"].as_array().unwrap().clone();
        sizes.push(page.iter().map(|l| l["line"].as_str().unwrap().len()).sum());
        if let Some(last) = page.last() {
            assert_eq!(r.body["next"], last["seq"]);
        }
        lines.extend(page);
        after = r.body["next"].as_u64().unwrap();
        if r.body["more"] == false {
            return (lines, sizes);
        }
        assert!(sizes.len() < 100, "pages without end");
    }
}

#[test]
fn a_nodes_logs_come_a_page_at_a_time_as_the_cli_prints_them() {
    let w = World::new();
    let s = w.serve(&[]);
    let wf = json!({ "id": "chatty", "max_parallel": 1, "nodes": [
        { "id": "hello", "type": "code", "code": "print('hello from a')\nlog('noted', level='warning')\nreturn 1" },
        { "id": "each", "type": "code", "for_each": [0, 1, 2],
          "code": "print('item %d speaks' % item)\nreturn item" },
        // ~600 KB: more than two pages.
        { "id": "flood", "type": "code",
          "code": "for i in range(3000):\n    print('%05d ' % i + 'x' * 194)\nreturn 0" },
    ]});
    let id = s.start("/api/executions", &json!({ "workflow": wf }));
    assert_eq!(s.wait_final(&id)["status"], "success");

    // All of them, paged: exactly what `flowrun logs --json` prints.
    let (lines, sizes) = all_pages(&s, &format!("/api/executions/{id}/logs"));
    let cli: Vec<Value> = w
        .cli_ok(&["logs", &id, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3005, "{:?}", &lines[..5]);
    assert_eq!(lines, cli);
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(sizes.iter().all(|&b| b <= (256 << 10) + 200), "{sizes:?}");

    // One node; one item of a node.
    let (hello, _) = all_pages(&s, &format!("/api/executions/{id}/logs?node=hello"));
    let said: Vec<(&str, &str)> = hello
        .iter()
        .map(|l| (l["stream"].as_str().unwrap(), l["line"].as_str().unwrap()))
        .collect();
    assert_eq!(said, [("stdout", "hello from a"), ("log", "noted")]);
    let one = s.get(&format!("/api/executions/{id}/logs?node=each&item=1"));
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body["more"], false);
    let logs = one.body["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(
        (&logs[0]["line"], &logs[0]["item"]),
        (&json!("item 1 speaks"), &json!(1))
    );
    assert_eq!(one.body["status"], "success");
    // Items one at a time print to fd 1 as they would alone: the runner names the item that
    // runs; `flowrun logs` shows it as the live display does.
    let text = w.cli_ok(&["logs", &id, "--node", "each"]);
    assert!(text.contains(" each[1] | item 1 speaks\n"), "{text}");

    // Nothing after the last one; what is asked wrongly says so.
    let last = lines.last().unwrap()["seq"].as_u64().unwrap();
    let r = s.get(&format!("/api/executions/{id}/logs?after={last}"));
    assert_eq!(
        (r.body["logs"].clone(), r.body["next"].clone()),
        (json!([]), json!(last))
    );
    let r = s.get(&format!("/api/executions/{id}/logs?node=ghost"));
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (404, Some("unknown_node")),
        "{}",
        r.text
    );
    // An item the node did not run: 404, saying which it ran, as `flowrun logs --node` does.
    let r = s.get(&format!("/api/executions/{id}/logs?node=each&item=7"));
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (404, Some("unknown_part")),
        "{}",
        r.text
    );
    let said =
        format!("node 'each' of execution {id} has no item 7: it ran 3 items (each[0] to each[2])");
    assert_eq!(r.body["message"], json!(said), "{}", r.text);
    let cli = w.cmd(["logs", &id, "--node", "each[7]"]);
    assert_code(&cli, 2, "logs of an item not run");
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains(&said),
        "{cli:?}"
    );
    let r = s.get(&format!("/api/executions/{id}/logs?item=1"));
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.get(&format!("/api/executions/{id}/logs?nodes=each"));
    assert_eq!(r.status, 400, "{}", r.text);
    for q in ["node=each&item=1&iteration=1", "node="] {
        let r = s.get(&format!("/api/executions/{id}/logs?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.text);
    }
    // Past the largest seq SQLite holds: nothing after it (not everything from the start).
    for after in ["9223372036854775808", "18446744073709551615"] {
        let r = s.get(&format!("/api/executions/{id}/logs?after={after}"));
        assert_eq!(
            (r.status, r.body["logs"].clone()),
            (200, json!([])),
            "{after}"
        );
    }
    assert_eq!(s.get("/api/executions/ffffffffffffffff/logs").status, 404);
}

/// What items and iterations run one at a time print names the one that printed it: stdout by
/// what runs as the line comes (stdout carries the events too), stderr — a pipe of its own,
/// read as it comes — by the runtime's marks on it at each item's start and end.
/// Code and command nodes, `for_each` and `repeat`, every line checked against what it says.
#[test]
fn lines_printed_by_items_one_at_a_time_name_their_item_stderr_too() {
    let w = World::new();
    let wf = w.write_workflow(
        "parts.json",
        &json!({ "id": "parts", "nodes": [
            { "id": "each", "type": "code", "for_each": [0, 1, 2, 3, 4, 5, 6, 7],
              "code": "import sys\nfor k in range(3):\n    sys.stderr.write('err item=%d\\n' % item)\n    print('out item=%d' % item)\nreturn item" },
            { "id": "cmd", "type": "command", "for_each": [0, 1, 2, 3, 4, 5, 6, 7],
              "argv": ["sh", "-c", "for k in 1 2 3; do echo err item={{ item }} >&2; echo out item={{ item }}; done"] },
            { "id": "again", "type": "code",
              "repeat": { "until": { "op": "ge", "left": "{{ output }}", "right": 6 }, "max_iterations": 6 },
              "code": "import sys\nfor k in range(3):\n    sys.stderr.write('err iteration=%d\\n' % iteration)\n    print('out iteration=%d' % iteration)\nreturn iteration" },
        ]}),
    );
    // "out item=3" -> ("item", 3)
    let says = |text: &str| {
        let (_, said) = text.split_once(' ').unwrap();
        let (kind, n) = said.split_once('=').unwrap();
        (kind.to_string(), n.parse::<u64>().unwrap())
    };
    for round in 0..3 {
        let out = w.cmd(["run", wf.to_str().unwrap(), "--events", "jsonl"]);
        assert_success(&out, "the run");
        let mut checked = 0;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let e: Value = serde_json::from_str(line).unwrap();
            if e["event"] != "log" {
                continue;
            }
            let text = e["line"].as_str().unwrap();
            let (kind, want) = says(text);
            assert_eq!(e[&kind].as_u64(), Some(want), "round {round}: {e}");
            checked += 1;
        }
        assert_eq!(checked, 8 * 6 * 2 + 6 * 6, "round {round}");
    }
}

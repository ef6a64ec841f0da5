use super::*;

fn ledger(max_parallel: usize) -> Ledger {
    let plan = [
        "a".to_string(),
        "b".to_string(),
        "c".to_string(),
        "l".to_string(),
    ];
    Ledger::new(
        &plan,
        Rules {
            continue_on_error: HashSet::from(["c".to_string()]),
            upstream: HashMap::from([("b".to_string(), vec!["a".to_string()])]),
            looping: HashSet::from(["l".to_string()]),
            max_parallel,
            not_run: NotRun {
                guarded: HashSet::from(["b".to_string()]),
                ..NotRun::default()
            },
            ..Rules::default()
        },
    )
}

#[test]
fn only_mocked_nodes_end_mocked_and_they_start_like_others() {
    let plan = ["a".to_string(), "m".to_string()];
    let rules = Rules {
        mocked: HashSet::from(["m".to_string()]),
        max_parallel: 1,
        ..Rules::default()
    };
    let mut l = Ledger::new(&plan, rules);
    l.start("a", 1, None, None).unwrap();
    assert!(
        l.end("a", 1, NodeStatus::Mocked, false, None).is_err(),
        "a is not mocked"
    );
    l.end("a", 1, NodeStatus::Success, false, None).unwrap();
    assert!(
        l.end("m", 0, NodeStatus::Mocked, false, None).is_err(),
        "a mocked node starts first"
    );
    l.start("m", 1, None, None).unwrap();
    l.end("m", 1, NodeStatus::Error, true, None).unwrap();
    l.start("m", 2, None, None).unwrap();
    assert!(
        l.end("m", 2, NodeStatus::Success, false, None).is_err(),
        "a mocked node's handler never runs"
    );
    l.end("m", 2, NodeStatus::Mocked, false, None).unwrap();
    assert_eq!(l.contradicts_success(), None);
}

#[test]
fn the_runtimes_own_sequence_is_accepted() {
    let mut l = ledger(1);
    l.start("a", 1, None, None).unwrap();
    l.end("a", 1, NodeStatus::Error, true, None).unwrap();
    l.start("a", 2, None, None).unwrap();
    l.end("a", 2, NodeStatus::Success, false, None).unwrap();
    l.end("b", 0, NodeStatus::Skipped, false, None).unwrap();
    l.start("c", 1, None, None).unwrap();
    l.end("c", 1, NodeStatus::Error, false, None).unwrap();
    assert_eq!(
        l.contradicts_success(),
        None,
        "c may fail: on_error continue"
    );
}

#[test]
fn items_live_inside_their_node() {
    let mut l = ledger(2);
    assert!(
        l.start("l", 1, Some(Part::Item(0)), None).is_err(),
        "item before the node"
    );
    l.start("l", 1, None, None).unwrap();
    l.start("l", 1, Some(Part::Item(0)), None).unwrap();
    l.start("l", 1, Some(Part::Item(1)), None).unwrap();
    assert!(
        l.end("l", 1, NodeStatus::Success, false, None).is_err(),
        "items still run"
    );
    l.end("l", 1, NodeStatus::Success, false, Some(Part::Item(1)))
        .unwrap();
    l.end("l", 1, NodeStatus::Error, false, Some(Part::Item(0)))
        .unwrap();
    l.end("l", 0, NodeStatus::Skipped, false, Some(Part::Item(2)))
        .unwrap();
    l.end("l", 1, NodeStatus::Error, false, None).unwrap();
    assert!(
        l.start("a", 1, Some(Part::Item(0)), None).is_err(),
        "a does not loop"
    );
}

#[test]
fn what_the_plan_makes_impossible_is_refused() {
    let mut l = ledger(1);
    assert!(
        l.start("ghost", 1, None, None)
            .unwrap_err()
            .message
            .contains("not a node")
    );
    assert!(
        l.end("a", 1, NodeStatus::Success, false, None).is_err(),
        "end without start"
    );
    assert!(
        l.start("b", 1, None, None).is_err(),
        "b starts before a ended"
    );
    l.start("a", 1, None, None).unwrap();
    assert!(
        l.start("a", 2, None, None).is_err(),
        "second start while running"
    );
    assert!(
        l.start("c", 1, None, None).is_err(),
        "a second node while max_parallel is 1"
    );
    l.end("a", 1, NodeStatus::Error, false, None).unwrap();
    let second = l.end("a", 1, NodeStatus::Success, false, None).unwrap_err();
    assert!(second.conflict, "second end of an ended attempt: {second}");
    assert!(
        l.start("a", 2, None, None).is_err(),
        "a start after the last end"
    );
    assert!(l.end("b", 3, NodeStatus::Pinned, false, None).is_err());
    assert_eq!(
        l.contradicts_success().as_deref(),
        Some("node 'a' ended error")
    );
}

#[test]
fn only_what_the_plan_names_ends_without_running() {
    let plan: Vec<String> = ["a", "p", "r", "s", "t", "l"].map(String::from).to_vec();
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    let rules = Rules {
        upstream: HashMap::from([
            ("s".to_string(), vec!["a".to_string()]),
            ("t".to_string(), vec!["s".to_string()]),
        ]),
        looping: set(&["l"]),
        max_parallel: 1,
        not_run: NotRun {
            pinned: set(&["p"]),
            reused: set(&["r"]),
            reused_items: HashMap::from([("l".to_string(), HashSet::from([1]))]),
            guarded: HashSet::new(),
        },
        ..Rules::default()
    };
    let mut l = Ledger::new(&plan, rules);
    // A node's code writing another node's row: refused, whatever the status.
    for (node, status) in [
        ("a", NodeStatus::Pinned),
        ("a", NodeStatus::Reused),
        ("r", NodeStatus::Pinned),
        ("p", NodeStatus::Reused),
        ("a", NodeStatus::Skipped),
    ] {
        let e = l.end(node, 0, status, false, None).unwrap_err();
        assert!(!e.conflict, "{e}");
    }
    // Skipped only after what it waits for, and only when all of that was skipped (no
    // condition guards s or t).
    assert!(l.end("s", 0, NodeStatus::Skipped, false, None).is_err());
    l.start("a", 1, None, None).unwrap();
    l.end("a", 1, NodeStatus::Success, false, None).unwrap();
    assert!(l.end("s", 0, NodeStatus::Skipped, false, None).is_err());
    l.end("p", 0, NodeStatus::Pinned, false, None).unwrap();
    l.end("r", 0, NodeStatus::Reused, false, None).unwrap();
    // Items: only those a resume reuses end reused; none past the node's item count.
    l.start("l", 1, None, Some(3)).unwrap();
    assert!(
        l.end("l", 0, NodeStatus::Reused, false, Some(Part::Item(0)))
            .is_err()
    );
    l.end("l", 0, NodeStatus::Reused, false, Some(Part::Item(1)))
        .unwrap();
    l.end("l", 0, NodeStatus::Skipped, false, Some(Part::Item(2)))
        .unwrap();
    let past = l
        .end("l", 0, NodeStatus::Skipped, false, Some(Part::Item(7)))
        .unwrap_err();
    assert!(past.message.contains("3 item(s)"), "{past}");
    assert!(l.start("l", 1, Some(Part::Item(3)), None).is_err());
    l.start("l", 1, Some(Part::Item(0)), None).unwrap();
    l.end("l", 1, NodeStatus::Success, false, Some(Part::Item(0)))
        .unwrap();
    l.end("l", 1, NodeStatus::Success, false, None).unwrap();
    // A node whose every upstream was skipped is skipped too.
    let mut m = Ledger::new(
        &plan,
        Rules {
            upstream: HashMap::from([("t".to_string(), vec!["s".to_string()])]),
            max_parallel: 1,
            not_run: NotRun {
                guarded: set(&["s"]),
                ..NotRun::default()
            },
            ..Rules::default()
        },
    );
    m.end("s", 0, NodeStatus::Skipped, false, None).unwrap();
    m.end("t", 0, NodeStatus::Skipped, false, None).unwrap();
    assert_eq!(m.contradicts_success(), None);
}

#[test]
fn a_retry_announced_may_be_withdrawn_as_an_error_or_cancelled_only() {
    let mut l = ledger(2);
    l.start("a", 1, None, None).unwrap();
    l.end("a", 1, NodeStatus::Error, true, None).unwrap();
    assert!(
        l.end("a", 1, NodeStatus::Success, false, None).is_err(),
        "a withdrawn retry cannot make the attempt a success"
    );
    // Nor skipped; but the pause may withdraw it as cancelled.
    assert!(l.end("a", 1, NodeStatus::Skipped, false, None).is_err());
    let mut m = ledger(2);
    m.start("a", 1, None, None).unwrap();
    m.end("a", 1, NodeStatus::Error, true, None).unwrap();
    m.end("a", 1, NodeStatus::Cancelled, false, None).unwrap();
    assert!(l.end("a", 2, NodeStatus::Error, false, None).is_err());
    assert!(l.end("a", 1, NodeStatus::Error, true, None).is_err());
    l.end("a", 1, NodeStatus::Error, false, None).unwrap();
    assert!(
        l.start("a", 2, None, None).is_err(),
        "nothing after the last end"
    );
    assert_eq!(
        l.contradicts_success().as_deref(),
        Some("node 'a' ended error")
    );
    // Only right after the retrying end: not once the next attempt ran.
    l.start("c", 1, None, None).unwrap();
    l.end("c", 1, NodeStatus::Error, true, None).unwrap();
    l.start("c", 2, None, None).unwrap();
    l.end("c", 2, NodeStatus::Error, false, None).unwrap();
    assert!(l.end("c", 1, NodeStatus::Error, false, None).is_err());
    // Items too, inside their node.
    l.start("l", 1, None, None).unwrap();
    l.start("l", 1, Some(Part::Item(0)), None).unwrap();
    l.end("l", 1, NodeStatus::Error, true, Some(Part::Item(0)))
        .unwrap();
    assert!(
        l.end("l", 1, NodeStatus::Error, false, None).is_err(),
        "the node ends after its items, retries included"
    );
    l.end("l", 1, NodeStatus::Error, false, Some(Part::Item(0)))
        .unwrap();
    l.end("l", 1, NodeStatus::Error, false, None).unwrap();
}

#[test]
fn a_node_waiting_for_its_retry_has_not_ended() {
    let mut l = ledger(1);
    l.start("a", 1, None, None).unwrap();
    l.end("a", 1, NodeStatus::Error, true, None).unwrap();
    assert_eq!(
        l.contradicts_success().as_deref(),
        Some("node 'a' never ended")
    );
    assert_eq!(l.still_running().as_deref(), Some("a"));
    assert!(
        l.start("b", 1, None, None).is_err(),
        "b waits for a's retry"
    );
    l.close("a", None, NodeStatus::Error);
    assert_eq!(l.still_running(), None);
}

#[test]
fn deltas_only_while_running() {
    let mut l = ledger(2);
    assert!(l.delta("a", None).is_err(), "before its start");
    assert!(l.delta("ghost", None).is_err());
    l.start("a", 1, None, None).unwrap();
    l.delta("a", None).unwrap();
    l.end("a", 1, NodeStatus::Success, false, None).unwrap();
    assert!(l.delta("a", None).is_err(), "after its end");
    l.start("l", 1, None, None).unwrap();
    assert!(
        l.delta("l", Some(Part::Item(0))).is_err(),
        "item not started"
    );
    l.start("l", 1, Some(Part::Item(0)), None).unwrap();
    l.delta("l", Some(Part::Item(0))).unwrap();
    l.end("l", 1, NodeStatus::Success, false, Some(Part::Item(0)))
        .unwrap();
    assert!(l.delta("l", Some(Part::Item(0))).is_err(), "item ended");
}

#[test]
fn nodes_run_side_by_side_up_to_max_parallel() {
    let mut l = ledger(2);
    l.start("a", 1, None, None).unwrap();
    l.start("c", 1, None, None).unwrap();
    assert!(
        l.start("l", 1, None, None).is_err(),
        "a third node past max_parallel 2"
    );
    assert_eq!(
        l.contradicts_success().as_deref(),
        Some("node 'a' never ended")
    );
    l.close("a", None, NodeStatus::Timeout);
    assert_eq!(
        l.contradicts_success().as_deref(),
        Some("node 'a' ended timeout")
    );
}

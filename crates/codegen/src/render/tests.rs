use super::*;

#[test]
fn a_script_rendered_again_is_the_same_and_a_change_is_never_served_stale() {
    let plan_of = |value: &str| {
        let source = crate::source::from_value(
            serde_json::json!({"id": "w", "nodes": [
                {"id": "a", "type": "set", "fields": {"v": value}},
            ]}),
            "<test>",
        )
        .unwrap();
        crate::compile(&source).unwrap()
    };
    let (one, two) = (plan_of("one"), plan_of("two"));
    let none = RenderOptions::default();
    let first = render(&one, &none);
    assert_eq!(first.text, render_fresh(&one, &none).text);
    let again = render(&one, &none);
    assert_eq!((&again.text, &again.sha256), (&first.text, &first.sha256));
    // Another definition, other options: other scripts, each as rendered afresh.
    let other = render(&two, &none);
    assert_ne!(other.sha256, first.sha256);
    assert!(other.text.contains("'two'") && !other.text.contains("'one'"));
    let limited = RenderOptions {
        max_cost_usd: Some(1.5),
        ..RenderOptions::default()
    };
    let changed = render(&one, &limited);
    assert_ne!(changed.sha256, first.sha256);
    // Its name without rendering: one per plan, options and build.
    let key = script_key(&one, &none, "build 1");
    assert_eq!(key, script_key(&one, &none, "build 1"));
    assert_eq!(key.len(), 64);
    for other in [
        script_key(&two, &none, "build 1"),
        script_key(&one, &limited, "build 1"),
        script_key(&one, &none, "build 2"),
    ] {
        assert_ne!(other, key);
    }
    assert_eq!(changed.text, render_fresh(&one, &limited).text);
    // Past the bound it starts over, and still renders right; a script too large to keep
    // is rendered and not kept.
    let kept = || {
        let r = RENDERED.get().unwrap().lock().unwrap();
        (r.scripts.len(), r.bytes)
    };
    let big = "x".repeat(RENDERED_BYTES / 4);
    for i in 0..40 {
        let value = if i % 10 == 3 {
            format!("{big}{i}")
        } else {
            format!("v{i}")
        };
        let plan = plan_of(&value);
        let before = kept();
        assert_eq!(render(&plan, &none).text, render_fresh(&plan, &none).text);
        let after = kept();
        assert!(after.1 <= RENDERED_BYTES, "{after:?}");
        if i % 10 == 3 {
            assert_eq!(after, before, "a script of over 4 MiB was kept");
        }
    }
}

#[test]
fn pin_status_is_typed_with_the_same_names() {
    assert_eq!(serde_json::json!(PinStatus::Pinned), "pinned");
    assert_eq!(serde_json::json!(PinStatus::Reused), "reused");
    let reused: PinStatus = serde_json::from_value("reused".into()).unwrap();
    assert_eq!(reused, PinStatus::Reused);
    let pin = Pin::pinned(Value::Null);
    assert_eq!(pin.status, PinStatus::Pinned);
    let pin = Pin::reused(Value::Null, Some("e1".into()));
    assert_eq!(pin.status, PinStatus::Reused);
    assert_eq!(pin.from_execution.as_deref(), Some("e1"));
}

#[test]
fn pins_reach_the_script_with_their_status() {
    let source = crate::source::from_value(
        serde_json::json!({"id": "w", "nodes": [
            {"id": "a", "type": "set", "fields": {}, "pinned": {"x": 1}},
            {"id": "b", "type": "set", "fields": {}},
            {"id": "c", "type": "set", "fields": {}},
        ]}),
        "<test>",
    )
    .unwrap();
    let plan = crate::compile(&source).unwrap();
    let mut options = RenderOptions::default();
    options.pins.insert(
        "b".into(),
        Pin::reused(serde_json::json!(2), Some("e1".into())),
    );
    let text = render(&plan, &options).text;
    for (expected, why) in [
        (
            "'pinned': {'output': {'x': 1}, 'status': 'pinned', 'from_execution': None}",
            "a: pinned in the definition",
        ),
        (
            "'pinned': {'output': 2, 'status': 'reused', 'from_execution': 'e1'}",
            "b: reused",
        ),
        ("'pinned': None", "c: runs"),
    ] {
        assert_eq!(text.matches(expected).count(), 1, "{why}\n{text}");
    }
}

#[test]
fn mocks_and_offline_reach_the_script_and_leave_other_scripts_alone() {
    use crate::mock::{Mock, MockOutcome};
    let source = crate::source::from_value(
        serde_json::json!({"id": "w", "connections": {"g": {"env": "G"}}, "nodes": [
            {"id": "a", "type": "http_request", "url": "http://x", "pinned": {"p": 1}},
            {"id": "b", "type": "http_request", "url": "http://x"},
            {"id": "c", "type": "llm", "provider": "groq", "model": "m", "prompt": "hi",
             "connection": "g"},
            {"id": "d", "type": "set", "fields": {}},
        ]}),
        "<test>",
    )
    .unwrap();
    let plan = crate::compile(&source).unwrap();
    let plain = render(&plan, &RenderOptions::default()).text;
    assert!(!plain.contains("'mock'") && !plain.contains("'offline'"));
    let mut options = RenderOptions {
        offline: true,
        ..Default::default()
    };
    options.mocks.insert(
        "c".into(),
        Mock::new(vec![
            MockOutcome::Error {
                kind: "RateLimit".into(),
                message: "slow down".into(),
            },
            MockOutcome::Output(serde_json::json!({"content": "hi"})),
        ]),
    );
    // Compared without whitespace: the literal is pretty-printed.
    let compact = |o: &RenderOptions| {
        let t = pyliteral::to_string(&workflow_data(&plan, o));
        t.split_whitespace()
            .collect::<String>()
            .replace(",]", "]")
            .replace(",}", "}")
    };
    let text = compact(&options);
    for (expected, count, why) in [
        (
            "'offline': True",
            1,
            "b only: a is pinned, c mocked, d makes no request",
        ),
        (
            "'mock': {'attempts': [{'error': {'type': 'RateLimit', 'message': 'slow down'}}, {'output': {'content': 'hi'}}]}",
            1,
            "c",
        ),
    ] {
        let expected: String = expected.split_whitespace().collect();
        assert_eq!(text.matches(&expected).count(), count, "{why}\n{text}");
    }
    // A mock wins over a pin.
    options
        .mocks
        .insert("a".into(), Mock::output(serde_json::json!(2)));
    let text = compact(&options);
    let a = &text[text.find("'id':'a'").unwrap()..];
    let a = &a[..a.find("'mock':{'attempts':[{'output':2}]}").unwrap()];
    assert!(a.contains("'pinned':None,"), "{a}");
}

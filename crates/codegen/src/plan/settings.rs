//! The settings every node takes, checked for a whole node and for one whose own fields did
//! not parse (its `for_each`, `repeat`, `retry`, `timeout_ms`, `requirements`).

use crate::model::{CommonFields, Node, Repeat, Retry};

/// The fields of a node [`node_settings`] checks: of a whole node, or of one whose own fields
/// did not parse (so that a typo there does not hide a wrong setting).
pub(super) struct Settings<'a> {
    retry: Retry,
    timeout_ms: Option<u64>,
    /// `max_concurrent` of a node with `for_each`.
    for_each: Option<u32>,
    repeat: Option<&'a Repeat>,
    requirements: &'a [String],
}

impl<'a> Settings<'a> {
    pub(super) fn of(node: &'a Node) -> Self {
        Settings {
            retry: node.retry,
            timeout_ms: node.timeout_ms,
            for_each: node.for_each.as_ref().map(|f| f.max_concurrent),
            repeat: node.repeat.as_ref(),
            requirements: &node.requirements,
        }
    }

    pub(super) fn of_common(c: &'a CommonFields) -> Self {
        Settings {
            retry: c.retry.unwrap_or_default(),
            timeout_ms: c.timeout_ms,
            for_each: c.for_each.as_ref().map(|_| c.max_concurrent.unwrap_or(1)),
            repeat: c.repeat.as_ref(),
            requirements: &c.requirements,
        }
    }
}

pub(super) fn node_settings(node: &Settings, report: &mut dyn FnMut(String, &str)) {
    if node.retry.max_attempts == 0 || node.retry.max_attempts > 100 {
        report(
            "`max_attempts` must be between 1 and 100".into(),
            "retry.max_attempts",
        );
    }
    if !(node.retry.factor.is_finite() && node.retry.factor >= 1.0) {
        report("`factor` must be a number ≥ 1".into(), "retry.factor");
    }
    if node.timeout_ms == Some(0) {
        report("must be at least 1 ms".into(), "timeout_ms");
    }
    if let Some(max_concurrent) = node.for_each {
        if max_concurrent == 0 {
            report("must be at least 1".into(), "max_concurrent");
        }
        if node.repeat.is_some() {
            report(
                "a node takes `for_each` or `repeat`, not both (put the repeat in a sub-workflow or a second node)".into(),
                "repeat",
            );
        }
    }
    if let Some(r) = &node.repeat {
        if r.max_iterations == 0 || r.max_iterations > 1000 {
            report(
                "`max_iterations` must be between 1 and 1000".into(),
                "repeat.max_iterations",
            );
        }
    }
    for (k, req) in node.requirements.iter().enumerate() {
        if req.trim().is_empty() || req.contains(['\n', '\r']) || req.trim_start().starts_with('-')
        {
            report(
                format!("'{req}' is not a pip requirement specifier"),
                &format!("requirements[{k}]"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::source::{Format, parse_str};

    /// A typo in a node's own fields, or a wrong value among the fields every node takes, does
    /// not hide the node's other wrong settings: one pass says them all.
    #[test]
    fn a_node_whose_fields_do_not_parse_still_has_its_settings_checked() {
        let d = parse_str(
            "id: w\nnodes:\n  - id: g\n    type: code\n    for_each: [1]\n    repeat: {until: x, max_iterations: 3}\n    code: return 1\n    timeout: 5\n  - id: a\n    type: code\n    for_each: [5]\n    fail_fast: 'no'\n    max_concurrent: 0\n    retry: {max_attempts: 0}\n    code: return 1\n",
            Format::Yaml,
            "wf",
        )
        .expect_err("invalid");
        let e: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
        for want in [
            "wf:6: node 'g', field 'repeat': a node takes `for_each` or `repeat`, not both",
            "wf:8: node 'g', field 'timeout': unknown field `timeout`",
            "wf:12: node 'a', field 'fail_fast': invalid type",
            "wf:13: node 'a', field 'max_concurrent': must be at least 1",
            "wf:14: node 'a', field 'retry.max_attempts': `max_attempts` must be between 1 and 100",
        ] {
            assert!(e.iter().any(|m| m.starts_with(want)), "{want}: {e:#?}");
        }
        assert_eq!(e.len(), 5, "{e:#?}");
    }
}

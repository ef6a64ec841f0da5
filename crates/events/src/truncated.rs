//! The marker that stands for a payload too large to store or send whole:
//! `{"$flowrun_truncated": true, "bytes": N, "preview": "…"}`. The runtime writes the same shape
//! (`runtime/`), so one check recognises both.

use serde_json::{Value, json};

/// The key that marks a truncated payload.
pub const KEY: &str = "$flowrun_truncated";

/// The marker for a payload of `bytes` bytes, keeping `preview`.
pub fn marker(bytes: usize, preview: &str) -> Value {
    json!({ KEY: true, "bytes": bytes, "preview": preview })
}

/// Is `v` a truncation marker (and so not the data it stands for)?
pub fn is_marker(v: &Value) -> bool {
    v.get(KEY) == Some(&Value::Bool(true))
}

/// The size of the payload a marker stands for.
pub fn original_bytes(v: &Value) -> Option<u64> {
    is_marker(v).then(|| v["bytes"].as_u64()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip() {
        let m = marker(12, "abc");
        assert!(is_marker(&m));
        assert_eq!(original_bytes(&m), Some(12));
        assert!(!is_marker(&json!({"a": 1})));
        assert!(!is_marker(&json!({KEY: "yes"})));
        assert_eq!(original_bytes(&json!(3)), None);
    }
}

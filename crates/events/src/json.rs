//! JSON from sources flowrun does not control (the child's protocol lines, trigger data), parsed
//! with a bound on nesting instead of serde_json's fixed recursion limit of 128.
//!
//! The runtime allows values nested up to 400 levels (it cuts deeper ones with a marker), so the
//! runner must accept that much — but not unbounded nesting, which would overflow the stack. The
//! depth is measured first, in one pass over the bytes; only then is the text parsed without
//! serde_json's own limit.

use serde::de::DeserializeOwned;

/// The deepest nesting accepted: the runtime's own cap (400) with room for the envelope
/// (`{"event": …, "output": …}`) around a value.
pub const MAX_DEPTH: usize = 420;

/// Why [`parse_bounded`] refused a text.
#[derive(Debug)]
pub enum BoundedError {
    TooDeep { depth: usize, max: usize },
    Json(serde_json::Error),
}

impl std::fmt::Display for BoundedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundedError::TooDeep { max, .. } => write!(f, "nested more than {max} levels deep"),
            BoundedError::Json(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BoundedError {}

/// How deep the arrays and objects of a JSON text nest (brackets inside strings do not count).
/// Stops counting once past `stop_at`.
pub fn nesting_depth(bytes: &[u8], stop_at: usize) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > stop_at {
                        return max;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses `bytes` as JSON nested at most `max_depth` levels.
pub fn parse_bounded<T: DeserializeOwned>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<T, BoundedError> {
    let depth = nesting_depth(bytes, max_depth);
    if depth > max_depth {
        return Err(BoundedError::TooDeep {
            depth,
            max: max_depth,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = T::deserialize(&mut de).map_err(BoundedError::Json)?;
    de.end().map_err(BoundedError::Json)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn nested(n: usize) -> String {
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a": "[[[{{{", "b": [1, [2]]}"#, 100), 3);
        assert_eq!(nesting_depth(br#"["\"[", ["\\"]]"#, 100), 2);
        assert_eq!(nesting_depth(b"42", 100), 0);
    }

    #[test]
    fn accepts_what_the_runtime_sends_and_refuses_more() {
        let v: Value = parse_bounded(nested(400).as_bytes(), MAX_DEPTH).expect("400 levels");
        assert!(v.is_array());
        let e = parse_bounded::<Value>(nested(100_000).as_bytes(), MAX_DEPTH).unwrap_err();
        assert!(matches!(e, BoundedError::TooDeep { .. }), "{e}");
        assert!(parse_bounded::<Value>(b"[1] x", MAX_DEPTH).is_err());
    }
}

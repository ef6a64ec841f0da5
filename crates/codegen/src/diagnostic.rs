//! Errors that point at the place in a workflow file a person has to fix.

use std::fmt;

/// One problem found in a workflow: where it is and what is wrong.
///
/// Displayed as `file:line:col: node 'x', field 'y': message`, leaving out the parts that are not
/// known, so an editor or terminal can jump to it. Serialized (`validate --json`, the HTTP API)
/// as `{file, line, column, node, field, message, node_index}`, each present and `null` when not
/// known (`node_index`: the node's position in `nodes`, which tells two nodes with one id apart).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub node: Option<String>,
    pub field: Option<String>,
    pub message: String,
    /// The node's position in `nodes`, to find its line when two nodes share an id (and for an
    /// editor, to mark the right one).
    #[serde(rename = "node_index")]
    pub(crate) index: Option<usize>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            file: None,
            line: None,
            column: None,
            node: None,
            field: None,
            message: message.into(),
            index: None,
        }
    }

    /// Names the node written at position `index` of `nodes`, whose id is `node`.
    pub(crate) fn node_at(mut self, index: usize, node: impl Into<String>) -> Self {
        self.index = Some(index);
        self.node(node)
    }

    pub(crate) fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub(crate) fn at(mut self, line: usize, column: Option<usize>) -> Self {
        self.line = Some(line);
        self.column = column;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prefix = String::new();
        if let Some(file) = &self.file {
            prefix.push_str(file);
            if let Some(line) = self.line {
                prefix.push_str(&format!(":{line}"));
                if let Some(col) = self.column {
                    prefix.push_str(&format!(":{col}"));
                }
            }
            prefix.push_str(": ");
        } else if let Some(line) = self.line {
            prefix.push_str(&format!("line {line}: "));
        }
        write!(f, "{prefix}{}", self.detail())
    }
}

impl Diagnostic {
    /// The node, the field and the message, without the place in the file (for a report that
    /// gives the file and line apart, as a GitHub annotation does).
    pub fn detail(&self) -> String {
        match (&self.node, &self.field) {
            (Some(n), Some(fl)) => format!("node '{n}', field '{fl}': {}", self.message),
            (Some(n), None) => format!("node '{n}': {}", self.message),
            (None, Some(fl)) => format!("field '{fl}': {}", self.message),
            (None, None) => self.message.clone(),
        }
    }
}

/// Every problem found in one workflow, in the order they appear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Diagnostics {
    /// In the order of their places in the file (those without a line last), keeping the order
    /// they were found in otherwise.
    pub(crate) fn sorted(mut self) -> Self {
        self.0.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
        self
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// serde's message with the Rust types it names ("expected struct RunBody", "expected u32")
/// said as JSON: a workflow's author and an API's caller know them as JSON.
pub fn in_json_terms(msg: &str) -> String {
    let mut msg = match (msg.find("expected struct "), msg.rfind(" at line ")) {
        (Some(i), end) => {
            let end = end.filter(|&e| e > i).unwrap_or(msg.len());
            format!("{}expected a JSON object{}", &msg[..i], &msg[end..])
        }
        _ => msg.to_string(),
    };
    for (rust, json) in [
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected u32", "expected a whole number ≥ 0"),
        ("expected usize", "expected a whole number ≥ 0"),
        ("expected u16", "expected a whole number ≥ 0"),
        ("expected u8", "expected a whole number ≥ 0"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
    ] {
        msg = msg.replace(rust, json);
    }
    msg
}

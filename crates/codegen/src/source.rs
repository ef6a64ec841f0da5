//! From a workflow file's text to a [`Workflow`], with errors that name file, line and column.
//!
//! The file is read (a regular file of at most [`MAX_FILE_BYTES`], UTF-8 with or without a
//! byte-order mark) and parsed into plain data: JSON with duplicate keys refused, YAML with merge
//! keys applied; syntax errors and hostile nesting come from here with line and column. The data
//! is then converted field by field and node by node ([`crate::convert`]), collecting every
//! problem, and when anything is wrong the plan's checks run too on what could be read, so one
//! pass reports everything. Errors found in the data name node and field, and
//! [`crate::locate`] finds their line in the text.

use crate::convert;
pub(crate) use crate::convert::typed;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::locate::{Locator, Seg, path_text};
use crate::model::Workflow;
use crate::yaml;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// The largest workflow file flowrun reads: 16 MiB.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By extension (`.json`, `.yaml`, `.yml`); for any other name, JSON when the text starts
    /// with `{`, else YAML.
    pub(crate) fn detect(path: &Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => Format::Yaml,
            Some("json") => Format::Json,
            _ if without_bom(text).trim_start().starts_with('{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// A parsed workflow file: the typed workflow, the definition as plain JSON (what is stored as
/// the snapshot), and the text, kept for locating later errors.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: String,
    pub format: Format,
    pub text: String,
    pub workflow: Workflow,
    /// The definition as JSON, as it was written (key order kept), with YAML merge keys applied
    /// and top-level `x-` keys left out.
    pub definition: Value,
    /// For a definition without a file (`file` starts with `<`: an editor's request): the
    /// directory its relative paths start from, as if it were a file there ([`Source::placed_in`]).
    pub dir: Option<std::path::PathBuf>,
}

impl Source {
    /// A definition without a file read as if it were in `dir`: a saved workflow's edited
    /// version finds its sub-workflows and runs its nodes where the saved one does.
    pub fn placed_in(mut self, dir: std::path::PathBuf) -> Source {
        self.dir = Some(dir);
        self
    }

    /// The directory the workflow's relative paths start from (a sub-workflow's file, its nodes'
    /// working directory): its file's; for a definition without one, where it was placed, else
    /// the current directory. Absolute.
    pub fn base_dir(&self) -> std::path::PathBuf {
        use std::path::{Path, PathBuf};
        let cwd = || std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let dir = if self.file.starts_with('<') {
            self.dir.clone().unwrap_or_else(cwd)
        } else {
            let file =
                std::path::absolute(&self.file).unwrap_or_else(|_| PathBuf::from(&self.file));
            file.parent().map(Path::to_path_buf).unwrap_or_else(cwd)
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// Fills in file and line of diagnostics that name a node (and field) but no line.
    pub(crate) fn locate(&self, diags: Diagnostics) -> Diagnostics {
        locate_in(&self.text, self.format, &self.file, diags)
    }

    /// A problem with a top-level field found outside codegen (the `inputs` schema), with the
    /// file and the field's line.
    pub fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        let d = Diagnostic::new(message).field(field);
        let mut located = self.locate(d.into());
        located.0.remove(0)
    }

    /// Where line `line` (and column `column`, 1-based) of a YAML literal block (`code: |`)
    /// whose key is on line `key_line` of this file is: `None` when that key does not start
    /// one (JSON, a quoted or folded string), whose lines are not the file's.
    fn line_in_block(
        &self,
        key_line: usize,
        line: usize,
        column: Option<usize>,
    ) -> Option<(usize, Option<usize>)> {
        if self.format != Format::Yaml || line == 0 {
            return None;
        }
        let mut lines = self.text.lines().skip(key_line.checked_sub(1)?);
        let key = lines.next()?;
        let key = key.split(" #").next().unwrap_or(key).trim_end();
        let (_, indicator) = key.rsplit_once(':')?;
        let indicator = indicator.trim();
        if !indicator.starts_with('|')
            || !indicator[1..].chars().all(|c| "+-0123456789".contains(c))
        {
            return None;
        }
        // The block's indentation is its first line's that is not blank.
        let indent = lines
            .clone()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start_matches(' ').len())?;
        lines.nth(line - 1)?;
        Some((key_line + line, column.map(|c| indent + c)))
    }

    /// Problems with fields of nodes found outside codegen (code nodes whose source does not
    /// compile): each at the node (its first with that id), with the file and the field's line
    /// — or, for a problem `within` a field written as a YAML literal block (`code: |`), the
    /// file's line and column of that place in it. Located together: the file is scanned once.
    pub fn node_diagnostics(&self, problems: Vec<NodeProblem>) -> Diagnostics {
        let within: Vec<_> = problems.iter().map(|p| p.within).collect();
        let diags = problems
            .into_iter()
            .map(|p| {
                let d = Diagnostic::new(p.message).field(p.field);
                match self.workflow.nodes.iter().position(|n| n.id == p.node) {
                    Some(index) => d.node_at(index, p.node),
                    None => d.node(p.node),
                }
            })
            .collect();
        let mut located = locate_each(&self.text, self.format, &self.file, Diagnostics(diags));
        for (d, within) in located.0.iter_mut().zip(within) {
            let (Some(key_line), Some((line, column))) = (d.line, within) else {
                continue;
            };
            if let Some((l, c)) = self.line_in_block(key_line, line, column) {
                (d.line, d.column) = (Some(l), c);
            }
        }
        located.sorted()
    }
}

/// A problem with a field of a node found outside codegen ([`Source::node_diagnostics`]).
#[derive(Debug, Clone)]
pub struct NodeProblem {
    pub node: String,
    pub field: String,
    pub message: String,
    /// Where in the field's own text (a code node's source) it is: line and column, 1-based.
    pub within: Option<(usize, Option<usize>)>,
}

fn locate_in(text: &str, format: Format, file: &str, diags: Diagnostics) -> Diagnostics {
    locate_each(text, format, file, diags).sorted()
}

/// [`locate_in`], in the order given.
fn locate_each(text: &str, format: Format, file: &str, mut diags: Diagnostics) -> Diagnostics {
    let needs_line = diags.0.iter().any(|d| d.line.is_none());
    let loc = needs_line.then(|| Locator::new(text, format));
    for d in &mut diags.0 {
        d.file.get_or_insert_with(|| file.to_string());
        if let (None, Some(loc)) = (d.line, &loc) {
            if let Some((line, column)) = loc.find(d.index, d.node.as_deref(), d.field.as_deref()) {
                d.line = Some(line);
                d.column = column;
            }
        }
    }
    diags
}

fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Reads and parses a workflow file.
pub fn load_file(path: &Path) -> Result<Source, Diagnostics> {
    let file = path.display().to_string();
    let text = read_text(path).map_err(|message| {
        let mut d = Diagnostic::new(message);
        d.file = Some(file.clone());
        Diagnostics::from(d)
    })?;
    parse_str(&text, Format::detect(path, &text), &file)
}

/// The data of a workflow file as written (JSON or YAML), not checked as a workflow: what is
/// looked into when the file is not a valid one (`validate` says whether code nodes were left
/// uncompiled). `None` when it cannot be read or parsed.
pub fn written_data(path: &Path) -> Option<Value> {
    let text = read_text(path).ok()?;
    let text = without_bom(&text);
    match Format::detect(path, text) {
        Format::Json => crate::json::parse(text).ok(),
        Format::Yaml => yaml_data(text).ok(),
    }
}

/// The text of a workflow file: a regular file (not a directory, device or pipe, which could be
/// read forever), at most [`MAX_FILE_BYTES`], in UTF-8.
fn read_text(path: &Path) -> Result<String, String> {
    read_text_file(
        path,
        "workflow file",
        "a workflow is a .json, .yaml or .yml file",
    )
}

/// The text of a file flowrun reads for its data (a workflow, a test file, a snapshot file),
/// named `what` in messages (`hint` follows the refusal of a directory or device): a regular file
/// (not a directory, device or pipe, which could be read forever), at most [`MAX_FILE_BYTES`],
/// in UTF-8.
pub fn read_text_file(path: &Path, what: &str, hint: &str) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read the {what}: {e}");
    // The path is looked at before it is opened (opening some devices does something), and
    // what was opened — without waiting, as a FIFO swapped in meanwhile would — is looked at
    // again.
    let regular = |meta: std::fs::Metadata| {
        if meta.is_file() {
            return Ok(meta);
        }
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, pipe or socket)"
        };
        Err(format!("cannot read the {what}: it is {kind}; {hint}"))
    };
    regular(std::fs::metadata(path).map_err(cannot)?)?;
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(cannot)?
    };
    let meta = regular(file.metadata().map_err(cannot)?)?;
    let too_big = |size: u64| {
        format!(
            "the {what} is {size} bytes; {what}s are at most {} MiB",
            MAX_FILE_BYTES >> 20
        )
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A regular file reads the same with O_NONBLOCK.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        // It grew while being read.
        return Err(too_big(bytes.len() as u64));
    }
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Err(format!("the {what} is UTF-16 text; save it as UTF-8"));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        format!("the {what} is not UTF-8 text (an invalid byte on line {line})")
    })
}

/// Whether a file that does not load as a workflow is one in the making: data with `nodes`, or
/// text that does not parse but names `nodes` (a workflow half written). Anything else (a
/// `package.json`, a `tsconfig.json` with comments, a manifest of several YAML documents) is not
/// a workflow: the server neither replaces nor deletes it.
pub fn may_be_workflow(path: &Path) -> bool {
    let Ok(text) = read_text(path) else {
        return false;
    };
    let text = without_bom(&text);
    let data = match Format::detect(path, text) {
        Format::Json => crate::json::parse(text).ok(),
        Format::Yaml => yaml_data(text).ok(),
    };
    match data {
        None => text.contains("nodes"),
        Some(Value::Object(m)) => m.contains_key("nodes"),
        Some(_) => false,
    }
}

/// Where YAML text nests flow collections (`[`, `{`) deeper than flowrun reads, as a 1-based
/// line and column, found in one pass: parsers refuse such text only after work that grows
/// with the square of the depth.
pub fn yaml_too_deep(text: &str) -> Option<(usize, usize, String)> {
    yaml::flow_too_deep(text, yaml::MAX_DEPTH).map(|(l, c)| (l, c, yaml::too_deep()))
}

/// Parses workflow text. `file` is only used in messages.
pub fn parse_str(text: &str, format: Format, file: &str) -> Result<Source, Diagnostics> {
    // A byte-order mark is not part of the data (and is not a column in an editor).
    let text = without_bom(text);
    let fail = |d: Diagnostic| locate_in(text, format, file, d.into());
    if let Some(what) = no_data(text, format) {
        return Err(fail(Diagnostic::new(format!(
            "the workflow file is {what} (a workflow is an object with `id` and `nodes`)"
        ))));
    }
    let definition = match format {
        Format::Json => crate::json::parse(text).map_err(|d| fail(name_node(d, text, format)))?,
        Format::Yaml => yaml_data(text).map_err(|d| fail(name_node(d, text, format)))?,
    };
    let convert::Read {
        workflow,
        definition,
        diagnostics,
        known,
        nodes,
    } = convert::workflow(definition);
    let source = Source {
        file: file.to_string(),
        format,
        text: text.to_string(),
        workflow,
        definition,
        dir: None,
    };
    if diagnostics.is_empty() {
        return Ok(source);
    }
    // Something is wrong: check the rest too, on what could be read.
    let mut diags = diagnostics;
    let written = convert::written(&nodes, &source.workflow);
    if let Err(more) = crate::plan::check(&source.workflow, &written, known) {
        diags.extend(more.0);
    }
    Err(source.locate(Diagnostics(diags)))
}

/// Why text holds no data at all, when it holds none: `empty` (nothing, or only white space),
/// or, in YAML, nothing but comments and document markers. Such a file read as `null`, and was
/// "not null" in the message, not the empty file it is.
fn no_data(text: &str, format: Format) -> Option<&'static str> {
    if text.trim().is_empty() {
        return Some("empty");
    }
    let nothing = |l: &str| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    };
    (format == Format::Yaml && text.lines().all(nothing)).then_some("empty: nothing but comments")
}

/// YAML text as JSON data, with merge keys applied.
fn yaml_data(text: &str) -> Result<Value, Diagnostic> {
    if let Some((line, column)) = yaml::flow_too_deep(text, yaml::MAX_DEPTH) {
        return Err(
            Diagnostic::new(format!("invalid YAML: {}", yaml::too_deep())).at(line, Some(column)),
        );
    }
    let data: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| crate::yaml_errors::yaml_error(&e, text))?;
    let ids: Vec<Option<String>> = data
        .get("nodes")
        .and_then(|n| n.as_sequence())
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n.get("id").and_then(|i| i.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    yaml::to_json(data, &mut Vec::new()).map_err(|e| {
        let d = Diagnostic::new(format!("invalid YAML: {}", e.message));
        match e.path.as_slice() {
            [Seg::Key(nodes), Seg::Index(k), rest @ ..] if nodes == "nodes" => {
                let label = ids
                    .get(*k)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| format!("#{}", k + 1));
                let d = d.node_at(*k, label);
                if rest.is_empty() {
                    d
                } else {
                    d.field(path_text(rest))
                }
            }
            [] => d,
            path => d.field(path_text(path)),
        }
    })
}

/// A parser error inside a node (a duplicate key) also names the node it is in.
fn name_node(mut d: Diagnostic, text: &str, format: Format) -> Diagnostic {
    let (Some(line), true) = (d.line, d.message.contains("duplicate")) else {
        return d;
    };
    let loc = Locator::new(text, format);
    if let Some(k) = loc.node_at_line(line, d.column.unwrap_or(1)) {
        d.index = Some(k);
        d.node = Some(loc.node_id(k).unwrap_or_else(|| format!("#{}", k + 1)));
    }
    d
}

/// Builds a [`Source`] from a definition that arrived as JSON data (an editor's unsaved state).
pub fn from_value(definition: Value, label: &str) -> Result<Source, Diagnostics> {
    let text = serde_json::to_string_pretty(&definition).expect("a JSON value serializes");
    parse_str(&text, Format::Json, label)
}

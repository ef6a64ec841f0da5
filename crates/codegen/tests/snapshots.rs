//! Snapshots of the script generated for every workflow in `examples/`.
//!
//! The runtime files (`runtime/core/*.py`, `runtime/nodes/*.py`) are inlined verbatim into every
//! script; the test checks that they are, then replaces each with a one-line marker before
//! snapshotting, so a snapshot shows what codegen itself decides (the template around the
//! runtime, which node types are included and in which order, the `WORKFLOW` literal) and does
//! not churn on every runtime edit. Update with `INSTA_UPDATE=always cargo test -p flowrun-codegen
//! --test snapshots` (or `cargo insta review`) and review the diff.

use flowrun_codegen::{RenderOptions, compile, load_file, render};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the codegen crate sits in crates/ of the repository")
        .to_path_buf()
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("dir entry").path())
        // Workflows, not their test files (`*.test.yaml`, run by `flowrun test`).
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            ) && !p.to_string_lossy().contains(".test.")
        })
        .collect();
    files.sort();
    files
}

/// Replaces the inlined runtime sources by markers, checking each used one is there verbatim:
/// every part of `runtime/core/` (so none is missing from render.rs's list, and the snapshot shows
/// their order) and the node types' files.
fn without_runtime(script: &str, node_types: &[&str]) -> String {
    let mut core_parts: Vec<String> = std::fs::read_dir(repo().join("runtime/core"))
        .expect("runtime/core/ exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".py"))
        .map(|name| format!("runtime/core/{name}"))
        .collect();
    core_parts.sort();
    let node_files = node_types.iter().map(|t| format!("runtime/nodes/{t}.py"));
    let mut text = script.to_string();
    for file in core_parts.into_iter().chain(node_files) {
        let src =
            std::fs::read_to_string(repo().join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let src = src.trim_end();
        assert_eq!(
            text.matches(src).count(),
            1,
            "{file} is not inlined exactly once"
        );
        text = text.replacen(src, &format!("# [{file}, inlined verbatim]"), 1);
    }
    text
}

#[test]
fn example_scripts() {
    let files = examples();
    assert!(!files.is_empty(), "no examples found");
    for path in files {
        let source = load_file(&path).unwrap_or_else(|d| panic!("{}: {d}", path.display()));
        let plan = compile(&source).unwrap_or_else(|d| panic!("{}: {d}", path.display()));
        let script = render(&plan, &RenderOptions::default());
        // Deterministic: the same workflow, the same bytes (and hash).
        let again = render(&plan, &RenderOptions::default());
        assert_eq!(script.text, again.text);
        assert_eq!(script.sha256, again.sha256);

        let types = plan.node_types();
        // Only the node types the workflow uses are included.
        assert_eq!(
            script.text.matches("\n# ---- node type ").count(),
            types.len(),
            "{}",
            path.display()
        );
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        // A `workflow` node's child file is written as its absolute path: the checkout's
        // place is not part of the snapshot.
        let text = without_runtime(&script.text, &types)
            .replace(&format!("{}/", repo().display()), "<repo>/");
        insta::assert_snapshot!(name, text);
    }
}

//! `flowrun __sub`: the runner of one child execution of a `workflow` node (hidden).
//!
//! The node's handler (`runtime/nodes/workflow.py`) starts it inside the parent execution's
//! process tree with the child's file, the parent execution, node (and `for_each` item), the
//! depth and the interpreter as arguments, the database as `--db`, and the inputs as JSON on
//! stdin. It runs the child through `flowrun_app::runner` as `flowrun run` does, recorded with
//! `parent_id`, `relation: sub` and the node, and prints two JSON lines on stdout for the
//! handler: `{"event": "started", "execution_id"}` once the child's row exists, and
//! `{"event": "result", "execution_id", "status", "output", "error", "cost_usd",
//! "limit_from_parent", "parent_pausing"}` at the end (also when the child could not start: then
//! `execution_id` is null). SIGTERM, SIGINT and SIGHUP (the parent being stopped) and `flowrun stop CHILD` stop
//! the child; if this process is killed instead,
//! the child's lifeline closes and its shepherd ends the child's processes.

use super::{Exit, open_store};
use clap::Args;
use flowrun_app::SharedStore;
use flowrun_app::runner::{self, RunOptions, Trigger};
use flowrun_app::signals::Signals;
use flowrun_app::subflow::{MAX_DEPTH, SubCall};
use flowrun_events::{ErrorInfo, ExecStatus, Relation};
use flowrun_executor::{Quiet, StopReason};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

#[derive(Args, Debug)]
pub struct SubArgs {
    /// The child workflow file.
    pub file: PathBuf,
    /// The parent execution.
    #[arg(long)]
    pub parent: String,
    /// The parent's `workflow` node.
    #[arg(long)]
    pub node: String,
    /// The `for_each` item of the node.
    #[arg(long)]
    pub item: Option<u64>,
    /// The child's depth (the parent's + 1).
    #[arg(long)]
    pub depth: u32,
    /// The interpreter (the parent's).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The parent's mode.
    #[arg(long, default_value = "test")]
    pub mode: String,
    #[arg(long, default_value_t = 1000)]
    pub kill_grace_ms: u64,
    /// The child's timeout when its workflow sets none (the parent's).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Nodes that would make network requests fail at once (`flowrun test --offline`).
    #[arg(long)]
    pub offline: bool,
    /// What the parent may still spend (its `max_cost_usd` less what it spent): the child's
    /// limit, or its own when that is lower.
    #[arg(long)]
    pub max_cost_usd: Option<f64>,
}

/// The most bytes of inputs a child takes (its trigger).
const MAX_INPUTS_BYTES: usize = 64 << 20;

fn say(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn not_started(kind: &str, message: String) -> Result<i32, Exit> {
    say(&json!({
        "event": "result",
        "execution_id": null,
        "status": "error",
        "output": null,
        "error": {"type": kind, "message": message},
    }));
    Ok(0)
}

pub fn sub(args: SubArgs, db: Option<&Path>) -> Result<i32, Exit> {
    if args.depth > MAX_DEPTH {
        return not_started(
            "DepthLimit",
            format!(
                "sub-workflows nest at most {MAX_DEPTH} levels deep; {} would be at depth {}",
                args.file.display(),
                args.depth
            ),
        );
    }
    // The inputs, as a trigger is bounded: at most 64 MiB.
    let mut text = Vec::new();
    let limit = MAX_INPUTS_BYTES as u64 + 1;
    if let Err(e) = std::io::stdin().take(limit).read_to_end(&mut text) {
        return not_started("SubWorkflow", format!("cannot read the inputs: {e}"));
    }
    if text.len() > MAX_INPUTS_BYTES {
        return not_started(
            "SubWorkflow",
            format!("the inputs are over {} MiB", MAX_INPUTS_BYTES >> 20),
        );
    }
    let source = match flowrun_codegen::load_file(&args.file) {
        Ok(s) => s,
        Err(d) => return not_started("Invalid", d.to_string()),
    };
    let own_limit = source.workflow.max_cost_usd;
    // Whether the limit the child runs with is the parent's share (a child refused a call by
    // its own lower limit fails its node; by the parent's, its parent).
    let limit_from_parent = args
        .max_cost_usd
        .is_some_and(|left| own_limit.is_none_or(|own| left <= own));
    let options = RunOptions {
        python: args.python,
        kill_grace_ms: args.kill_grace_ms,
        timeout_ms: args
            .timeout_ms
            .filter(|_| source.workflow.timeout_ms.is_none()),
        offline: args.offline,
        max_cost_usd: args.max_cost_usd.map(|left| {
            source
                .workflow
                .max_cost_usd
                .map_or(left, |own| own.min(left))
        }),
        cost_limit_is_share: limit_from_parent,
        mode: args.mode,
        parent: Some((args.parent.clone(), Relation::Sub)),
        sub: Some(SubCall {
            parent_node: args.node,
            item: args.item,
            depth: args.depth,
        }),
        parent_secrets: flowrun_app::subflow::parent_secrets(),
        ..RunOptions::default()
    };
    // Python starts while the store is opened and the run prepared (`runner::start_early`).
    let _early = runner::start_early(&source, &options);
    let store = SharedStore::new(open_store(db)?);
    // A parent's resume continues the child its earlier run left unfinished here.
    let call = options.sub.clone().expect("a sub-workflow's call");
    let resumed = flowrun_app::subflow::resume_of_earlier_child(
        &store.lock(),
        &call,
        &args.parent,
        &args.file,
        &text,
        options.clone(),
    );
    let reused = match &resumed {
        Some(r) if !r.retry => flowrun_app::subflow::reused_spending(&r.plan),
        _ => 0.0,
    };
    let prepared = match resumed {
        Some(r) => runner::prepare(&r.plan.source, r.plan.trigger, r.plan.options),
        None => runner::prepare(&source, Trigger::Text(text), options),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => return not_started("SubWorkflow", e.to_string()),
    };
    let id = runner::new_execution_id();
    if let Err(e) = runner::record_start(&store, &prepared, &id, ExecStatus::Running) {
        return not_started("StoreError", e.to_string());
    }
    say(&json!({"event": "started", "execution_id": id}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Exit::new(3, format!("cannot start the async runtime: {e}")))?;
    flowrun_executor::process::become_subreaper();
    let finished = rt.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(None);
        let watcher = tokio::spawn(watch_for_stop(store.clone(), id.clone(), stop_tx));
        let finished = runner::run(&store, &prepared, &id, &mut Quiet, stop_rx).await;
        watcher.abort();
        finished
    });
    flowrun_app::control::end_strays();
    let o = finished.outcome;
    let error: Option<ErrorInfo> = o.error;
    // What the child and its own children spent, as recorded, and, for a child that continues
    // an earlier one, what the outputs it reuses cost: the parent counts it against its own
    // limit, as it counts its own reused outputs.
    let cost = match flowrun_app::subflow::family_cost(&store.lock(), &id) {
        Some(c) => Some(c + reused),
        None => (reused > 0.0).then_some(reused),
    };
    // Paused with its parent (whose resume runs it again), or on its own (`flowrun pause
    // CHILD`): the parent's node fails then, and the child waits for its own resume.
    let parent_pausing = o.status == ExecStatus::Paused
        && store
            .lock()
            .execution(&args.parent)
            .is_ok_and(|p| p.pause_requested_at.is_some());
    say(&json!({
        "event": "result",
        "execution_id": id,
        "status": o.status,
        "output": o.output,
        "error": error,
        "cost_usd": cost,
        "limit_from_parent": limit_from_parent,
        "parent_pausing": parent_pausing,
    }));
    Ok(0)
}

/// Stops the child when this runner is signalled (its parent is being stopped) or when another
/// process asks through the store (`flowrun stop CHILD`); pauses it on `flowrun pause CHILD`.
async fn watch_for_stop(store: SharedStore, id: String, stop: watch::Sender<Option<StopReason>>) {
    let mut signals = Signals::new().ok();
    let signalled = async {
        match signals.as_mut() {
            Some(s) => s.next().await,
            None => std::future::pending().await,
        }
    };
    // `flowrun pause CHILD` pauses the child: its node then fails naming it (or, when its
    // parent is pausing too, the parent pauses), and the parent's resume runs it again.
    let reason = tokio::select! {
        // Sent by the parent's runtime (or its process group ending): the parent is ending.
        _ = signalled => StopReason::Parent,
        _ = super::run::stop_requested(store, id, &stop) => StopReason::Cancel,
    };
    let _ = stop.send(Some(reason));
}

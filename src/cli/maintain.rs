//! `flowrun prune` and `flowrun delete`.

use super::timefmt;
use super::{Exit, open_store};
use clap::Args;
use flowrun_events::now_ms;
use flowrun_store::Deleted;
use std::path::Path;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Delete executions that started longer ago than this (`30d`, `12h`, `2w`).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Keep only the newest N finished executions (of --workflow, if given). With --older-than,
    /// an execution goes only when it is both older and beyond the newest N. Running ones stay.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Only executions of this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Show what would be deleted without deleting it.
    #[arg(long)]
    pub dry_run: bool,
}

fn report(d: &Deleted, db: &Path, before: u64) {
    let after = file_size(db);
    out!(
        "deleted {} execution{}, {} node rows, {} events, {} unused definition snapshot{}; database {} → {}",
        d.executions,
        if d.executions == 1 { "" } else { "s" },
        d.nodes,
        d.events,
        d.snapshots,
        if d.snapshots == 1 { "" } else { "s" },
        human(before),
        human(after)
    );
}

/// The database file plus its WAL (`<path>-wal`, also for paths without an extension).
fn file_size(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

fn human(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

pub fn prune(args: PruneArgs, db: Option<&Path>) -> Result<i32, Exit> {
    if args.older_than.is_none() && args.keep.is_none() {
        return Err(Exit::new(
            2,
            "say what to prune: --older-than AGE (like 30d) and/or --keep N",
        ));
    }
    let before = match &args.older_than {
        Some(age) => Some(
            now_ms()
                - timefmt::parse_age(age).ok_or_else(|| {
                    Exit::new(
                        2,
                        format!(
                            "--older-than {age}: expected an age like 90s, 15m, 12h, 30d or 2w"
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let mut store = open_store(db)?;
    let ids = store.prune_candidates(before, args.keep, args.workflow.as_deref())?;
    if args.dry_run {
        out!(
            "would delete {} execution{}",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        );
        for id in &ids {
            out!("  {id}");
        }
        return Ok(0);
    }
    let size = file_size(store.path());
    let d = store.delete(&ids)?;
    report(&d, store.path(), size);
    Ok(0)
}

pub fn delete(ids: &[String], db: Option<&Path>) -> Result<i32, Exit> {
    let mut store = open_store(db)?;
    let mut full = Vec::new();
    for id in ids {
        let id = store.resolve_id(id)?;
        let e = store.execution(&id)?;
        if !e.status.is_final() {
            return Err(Exit::new(
                2,
                format!(
                    "execution {id} is {}; stop it first (flowrun stop {id})",
                    e.status
                ),
            ));
        }
        if let Some((parent, status)) = store.unfinished_ancestor(&id)? {
            return Err(Exit::new(
                2,
                format!(
                    "execution {id} is part of execution {parent}, which is {status}: delete it once that has ended (flowrun stop {parent} ends it now)"
                ),
            ));
        }
        full.push(id);
    }
    let size = file_size(store.path());
    let d = store.delete(&full)?;
    report(&d, store.path(), size);
    Ok(0)
}

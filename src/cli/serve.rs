//! `flowrun serve`: its flags, turned into the server's configuration.

use super::exit::{ENVIRONMENT, USAGE};
use super::{Exit, open_store};
use flowrun_app::SharedStore;
use flowrun_app::runner::RunOptions;
use flowrun_server::TokenFileError;
use flowrun_server::{Config, DEFAULT_PORT, ServeError};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TCP port (0: pick a free one; the URL printed says which).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on. Anything but loopback exposes the API to the network.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: IpAddr,
    /// Directory of saved workflows (.json, .yaml, .yml) that the API lists and runs.
    #[arg(long, value_name = "DIR")]
    pub workflows: Option<PathBuf>,
    /// How many executions run at once; more wait as `queued` (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<usize>,
    /// An origin allowed to call the API from a browser or desktop editor: `http://localhost:5173`,
    /// `app://editor`, `file://`, or `null` (never allowed unless given); repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Largest request body accepted.
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    pub max_body_bytes: usize,
    /// The bearer token's file: its token is used again when it is a 0600 file of ours (default:
    /// one per port in a private directory of the cache directory).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Python interpreter (default: $FLOWRUN_PYTHON, $VIRTUAL_ENV, python3 on PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping an execution.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub kill_grace_ms: u64,
    /// Cap on stored log bytes per execution; the rest is counted.
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    pub max_log_bytes: u64,
    /// Start every execution cold (a new interpreter) instead of forking it from a warm
    /// template of its interpreter.
    #[arg(long)]
    pub cold: bool,
}

pub fn serve(args: ServeArgs, db: Option<&Path>) -> Result<i32, Exit> {
    if args.max_concurrent == Some(0) {
        return Err(Exit::new(USAGE, "--max-concurrent must be at least 1"));
    }
    if let Some(dir) = args.workflows.as_deref().filter(|d| !d.is_dir()) {
        return Err(Exit::new(
            USAGE,
            format!("--workflows {}: not a directory", dir.display()),
        ));
    }
    for o in &args.allow_origin {
        flowrun_server::normalize_origin(o)
            .map_err(|m| Exit::new(USAGE, format!("--allow-origin {m}")))?;
    }
    let explicit_token_file = args.token_file.is_some();
    let config = Config {
        port: args.port,
        bind: args.bind,
        workflows: args.workflows,
        max_concurrent: args.max_concurrent,
        allow_origins: args.allow_origin,
        max_body_bytes: args.max_body_bytes,
        token_file: args.token_file,
        options: RunOptions {
            python: args.python,
            kill_grace_ms: args.kill_grace_ms,
            max_log_bytes: args.max_log_bytes,
            ..RunOptions::default()
        },
    };
    let store = SharedStore::new(open_store(db)?);
    if !args.cold {
        flowrun_app::control::become_subreaper();
        flowrun_app::control::enable_warm_starts(flowrun_app::control::WarmPolicy::Latency);
    }
    match flowrun_server::serve(config, store) {
        Ok(()) => Ok(0),
        Err(ServeError::Config(m)) => Err(Exit::new(USAGE, m)),
        Err(ServeError::Token(TokenFileError::Refused { path, reason })) => {
            let message = if explicit_token_file {
                format!("--token-file {}: {reason}", path.display())
            } else {
                format!(
                    "the token file {}: {reason} (or choose one with --token-file PATH)",
                    path.display()
                )
            };
            Err(Exit::new(USAGE, message))
        }
        Err(e) => Err(Exit::new(ENVIRONMENT, e.to_string())),
    }
}

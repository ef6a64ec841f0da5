//! `flowrun serve`: the local HTTP API and Server-Sent Events for editors (see `docs/api.md`).
//!
//! One process, one store connection, one multi-threaded tokio runtime. Executions started over
//! HTTP go through the same [`crate::runner`] and store as the CLI's, so `flowrun history` lists
//! them and `flowrun stop` stops them (the server polls the store's stop requests like a CLI
//! runner does).
//!
//! - [`security`]: bearer token, loopback `Host`, `Origin` allow-list with CORS, body limit.
//! - [`queue`]: running and queued executions, `--max-concurrent`, live event buffers, stop.
//! - [`api`]: the JSON endpoints. [`sse`]: the event stream. [`workflows`]: `--workflows DIR`.
//! - [`page`]: the web page at `/` (one embedded HTML file that calls the API with the token).

pub mod api;
pub mod page;
pub mod queue;
pub mod security;
pub mod sse;
pub mod workflows;

use crate::cli::Exit;
use crate::recorder::SharedStore;
use crate::runner::RunOptions;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Default TCP port of `flowrun serve`.
pub const DEFAULT_PORT: u16 = 7780;

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
    /// A browser origin allowed to call the API (`http://localhost:5173`); repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Largest request body accepted.
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    pub max_body_bytes: usize,
    /// Where to write the bearer token (default: a private directory in the cache directory).
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
}

/// What every handler shares.
pub struct App {
    pub store: SharedStore,
    pub executions: Arc<queue::Executions>,
    pub workflows_dir: Option<PathBuf>,
    pub security: security::Policy,
    /// Options every execution starts from (the request adds its timeout and mode).
    pub options: RunOptions,
    /// Becomes true when the server shuts down: streams that follow other processes end.
    pub shutdown: watch::Receiver<bool>,
}

pub type AppState = Arc<App>;

/// The router with every endpoint behind the security checks.
pub fn router(app: AppState) -> Router {
    let max_body = app.security.max_body_bytes;
    Router::new()
        .route("/", get(page::page))
        .route("/index.html", get(page::page))
        .route("/api", get(api::info))
        .route("/api/workflows", get(api::list_workflows))
        .route("/api/workflows/{id}", get(api::get_workflow))
        .route("/api/workflows/{id}/executions", post(api::start_saved))
        .route(
            "/api/executions",
            get(api::list_executions).post(api::start_unsaved),
        )
        .route("/api/executions/{id}", get(api::get_execution))
        .route("/api/executions/{id}/events", get(sse::events))
        .route("/api/executions/{id}/stop", post(api::stop))
        .route("/api/executions/{id}/rerun", post(api::rerun))
        .route("/api/executions/{id}/resume", post(api::resume))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            security::guard,
        ))
        .with_state(app)
}

fn write_out(line: &str) {
    // stdout may be a closed pipe: that must not end the server.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `flowrun serve`.
pub fn serve(args: ServeArgs, db: Option<&Path>) -> Result<i32, Exit> {
    // A client or child that goes away must give an error, not end the server.
    // SAFETY: setting a signal disposition before any thread of ours starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    if args.max_concurrent == Some(0) {
        return Err(Exit::new(2, "--max-concurrent must be at least 1"));
    }
    let origins = args
        .allow_origin
        .iter()
        .map(|o| security::normalize_origin(o).map_err(|e| Exit::new(2, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut args = args;
    if let Some(dir) = &args.workflows {
        if !dir.is_dir() {
            return Err(Exit::new(
                2,
                format!("--workflows {}: not a directory", dir.display()),
            ));
        }
        // Absolute, so the file paths the API reports mean the same to every client.
        args.workflows = Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()));
    }
    let max_concurrent = args.max_concurrent.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    crate::executor::process::become_subreaper();
    let store: SharedStore = Arc::new(Mutex::new(crate::cli::open_store(db)?));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("flowrun-serve")
        .build()
        .map_err(|e| Exit::new(3, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(run_server(args, origins, max_concurrent, store))
}

async fn run_server(
    args: ServeArgs,
    origins: Vec<String>,
    max_concurrent: usize,
    store: SharedStore,
) -> Result<i32, Exit> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port))
        .await
        .map_err(|e| {
            Exit::new(
                3,
                format!(
                    "cannot listen on {}: {e}",
                    SocketAddr::new(args.bind, args.port)
                ),
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Exit::new(3, format!("cannot read the listening address: {e}")))?;
    let token = security::new_token();
    let token_file = match &args.token_file {
        Some(p) => p.clone(),
        None => security::default_token_file(addr.port()),
    };
    security::write_token_file(&token_file, &token, args.token_file.is_none()).map_err(|e| {
        Exit::new(
            3,
            format!("cannot write the token file {}: {e}", token_file.display()),
        )
    })?;
    if !args.bind.is_loopback() {
        eprintln!(
            "flowrun serve: warning: listening on {}, not loopback: anyone who can reach it and has the token can run code here",
            args.bind
        );
    }
    // Signal handlers go in before the URL is printed: a client that reads it may signal at once.
    let mut signals =
        Signals::new().map_err(|e| Exit::new(3, format!("cannot handle signals: {e}")))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let executions = queue::Executions::new(store.clone(), max_concurrent);
    let app = Arc::new(App {
        store: store.clone(),
        executions: executions.clone(),
        workflows_dir: args.workflows.clone(),
        security: security::Policy {
            token,
            allow_origins: origins,
            max_body_bytes: args.max_body_bytes,
            bind: args.bind,
            port: addr.port(),
        },
        options: RunOptions {
            python: args.python.clone(),
            kill_grace_ms: args.kill_grace_ms,
            max_log_bytes: args.max_log_bytes,
            ..RunOptions::default()
        },
        shutdown: shutdown_rx,
    });
    write_out(&format!("flowrun serve: listening on http://{addr}"));
    write_out(&format!("token file: {}", token_file.display()));

    let poller = tokio::spawn(executions.clone().watch_stop_requests());
    let (stop_accepting_tx, mut stop_accepting_rx) = watch::channel(false);
    let server = tokio::spawn(
        axum::serve(listener, router(app.clone()))
            .with_graceful_shutdown(async move {
                let _ = stop_accepting_rx.wait_for(|v| *v).await;
            })
            .into_future(),
    );

    signals.recv().await;
    eprintln!("flowrun serve: shutting down");
    // A second signal ends at once; the runtimes of running children see their lifeline close
    // and end their groups, and the next flowrun start records them interrupted.
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("flowrun serve: second signal, exiting now");
        std::process::exit(130);
    });
    let _ = stop_accepting_tx.send(true);
    executions.shutdown().await;
    poller.abort();
    // Streams still open (following executions of other processes) end now.
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!("server: {e}"),
        Err(_) => tracing::warn!("some connections were still open after 5 s; closing them"),
        _ => {}
    }
    if args.token_file.is_none() {
        let _ = std::fs::remove_file(&token_file);
    }
    Ok(0)
}

/// SIGINT (Ctrl-C) and SIGTERM, registered at once.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

//! `flowrun serve`: the local HTTP API and Server-Sent Events for editors (see `docs/api.md`).
//!
//! One process, one store connection, one multi-threaded tokio runtime. Executions started over
//! HTTP go through the same application layer (`flowrun_app`) and store as the CLI's, so `flowrun history` lists
//! them and `flowrun stop` stops them (the server polls the store's stop requests like a CLI
//! runner does).
//!
//! - [`listen`]: accepting connections, with a request-head timeout and a connection cap.
//! - [`security`]: bearer token, loopback `Host`, `Origin` allow-list with CORS, body limit.
//! - [`api`]: the JSON endpoints. [`sse`]: the event stream. [`workflows`]: `--workflows DIR`.
//! - The queue of running and queued executions is `flowrun_app::queue`.
//! - [`token`]: the bearer token, kept in its file across restarts.
//! - [`page`]: the web page at `/` (one embedded HTML file that calls the API with the token).

mod api;
mod feed;
mod listen;
mod page;
mod security;
mod sse;
mod token;
mod workflows;

pub use security::normalize_origin;
pub use token::TokenFileError;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use flowrun_app::SharedStore;
use flowrun_app::queue;
use flowrun_app::runner::RunOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Default TCP port of `flowrun serve`.
pub const DEFAULT_PORT: u16 = 7780;

/// How the server is set up (the CLI builds it from `flowrun serve`'s flags).
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub bind: IpAddr,
    /// Directory of saved workflows the API lists and runs.
    pub workflows: Option<PathBuf>,
    /// How many executions run at once (default: the number of CPUs).
    pub max_concurrent: Option<usize>,
    /// Browser origins allowed to call the API, besides the server's own.
    pub allow_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// Where to write the bearer token (default: a private directory in the cache directory).
    pub token_file: Option<PathBuf>,
    /// Options every execution starts from (a request adds its own).
    pub options: RunOptions,
}

/// Why the server could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not usable; nothing was started.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] flowrun_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] token::TokenFileError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// What every handler shares.
pub(crate) struct App {
    pub store: SharedStore,
    pub executions: Arc<queue::Executions>,
    pub workflows_dir: Option<PathBuf>,
    pub security: security::Policy,
    /// Options every execution starts from (the request adds its timeout and mode).
    pub options: RunOptions,
    /// Becomes true when the server shuts down: streams that follow other processes end.
    pub shutdown: watch::Receiver<bool>,
    /// The server-wide stream of execution summaries (`GET /api/events`).
    pub feed: Arc<feed::Feed>,
}

pub(crate) type AppState = Arc<App>;

/// The router with every endpoint behind the security checks.
pub(crate) fn router(app: AppState) -> Router {
    let max_body = app.security.max_body_bytes;
    Router::new()
        .route("/", get(page::page))
        .route("/index.html", get(page::page))
        .route("/api", get(api::info))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/events", get(feed::events))
        .route("/api/validate", post(api::validate::validate))
        .route("/api/workflows", get(api::workflows::list))
        .route(
            "/api/workflows/{id}",
            get(api::workflows::get)
                .put(api::workflows::put)
                .delete(api::workflows::delete),
        )
        .route(
            "/api/workflows/{id}/executions",
            post(api::executions::start_saved),
        )
        .route(
            "/api/executions",
            get(api::executions::list).post(api::executions::start_unsaved),
        )
        .route(
            "/api/executions/{id}",
            get(api::executions::get).delete(api::executions::delete),
        )
        .route("/api/executions/{id}/pause", post(api::executions::pause))
        .route("/api/executions/{id}/events", get(sse::events))
        .route("/api/executions/{id}/logs", get(api::logs::logs))
        .route("/api/executions/{id}/stop", post(api::executions::stop))
        .route("/api/executions/{id}/rerun", post(api::executions::rerun))
        .route("/api/executions/{id}/resume", post(api::executions::resume))
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

/// Runs the server until SIGINT, SIGTERM or SIGHUP (unless ignored, as under `nohup`): prints
/// its URL and token file on stdout, serves, then cancels what is queued, stops what runs and
/// returns.
pub fn serve(config: Config, store: SharedStore) -> Result<(), ServeError> {
    // A client or child that goes away must give an error, not end the server.
    // SAFETY: setting a signal disposition before any thread of ours starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    if config.max_concurrent == Some(0) {
        return Err(ServeError::Config(
            "at most 0 executions at once: nothing could run; allow at least 1".into(),
        ));
    }
    let origins = config
        .allow_origins
        .iter()
        .map(|o| security::normalize_origin(o).map_err(ServeError::Config))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = config;
    if let Some(dir) = &config.workflows {
        if !dir.is_dir() {
            return Err(ServeError::Config(format!(
                "the workflows directory {} is not a directory",
                dir.display()
            )));
        }
        // Absolute, so the file paths the API reports mean the same to every client.
        config.workflows = Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()));
    }
    // A server whose interpreter does not work refuses every run: said as it starts, not only in
    // the 503 of the first run.
    if let Err(e) = flowrun_app::python::discover(
        config.options.python.as_deref(),
        &flowrun_app::paths::cache_dir(),
    ) {
        flowrun_app::say!(
            "warning: {e}\nevery run will be refused (503 python_unavailable) until that is fixed (`flowrun doctor` says how)"
        );
    }
    let max_concurrent = config.max_concurrent.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    flowrun_app::control::become_subreaper();
    // Half the cores run the server's tasks, the rest are left to the executions' children: on
    // two cores one worker, which answers `?wait=true` ~0.3-0.5 ms sooner than two (fewer
    // hand-overs between workers, and the interpreter keeps a core). Files are read on the
    // blocking threads, and a task that waits for the store gives its worker's other tasks to
    // another thread (`SharedStore`), so one worker keeps answering.
    let workers = std::thread::available_parallelism()
        .map(|n| (n.get() / 2).max(1))
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("flowrun-serve")
        .build()
        .map_err(|source| ServeError::Io {
            what: "cannot start the async runtime",
            source,
        })?;
    rt.block_on(run_server(config, origins, max_concurrent, store))
}

async fn run_server(
    config: Config,
    origins: Vec<String>,
    max_concurrent: usize,
    store: SharedStore,
) -> Result<(), ServeError> {
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Io {
        what: "cannot read the listening address",
        source,
    })?;
    let token_file = match &config.token_file {
        Some(p) => p.clone(),
        None => token::default_token_file(addr.port()),
    };
    let (token, how) = token::load_or_create(&token_file, config.token_file.is_none())?;
    match how {
        token::Origin::Reused => flowrun_app::say!(
            "flowrun serve: the token in {} is used again (remove the file for a new one)",
            token_file.display()
        ),
        token::Origin::Replaced { mode } => flowrun_app::say!(
            "flowrun serve: warning: the token file {} had mode {mode:04o}, not 0600: others may have read its token; a new token replaces it",
            token_file.display()
        ),
        token::Origin::Written => {}
    }
    if origins.iter().any(|o| o == "null") {
        flowrun_app::say!(
            "flowrun serve: warning: Origin null is allowed: every sandboxed page and local file in a browser sends it (they still need the token)"
        );
    }
    if !config.bind.is_loopback() {
        flowrun_app::say!(
            "flowrun serve: warning: listening on {}, not loopback: anyone who can reach it and has the token can run code here",
            config.bind
        );
    }
    // Signal handlers go in before the URL is printed: a client that reads it may signal at once.
    let mut signals = flowrun_app::signals::Signals::new().map_err(|source| ServeError::Io {
        what: "cannot handle signals",
        source,
    })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let executions = queue::Executions::new(store.clone(), max_concurrent);
    let app = Arc::new(App {
        store: store.clone(),
        executions: executions.clone(),
        workflows_dir: config.workflows.clone(),
        security: security::Policy {
            token,
            allow_origins: origins,
            max_body_bytes: config.max_body_bytes,
            bind: config.bind,
            port: addr.port(),
        },
        options: config.options.clone(),
        shutdown: shutdown_rx.clone(),
        feed: feed::Feed::new(),
    });
    write_out(&format!("flowrun serve: listening on http://{addr}"));
    write_out(&format!("token file: {}", token_file.display()));

    let poller = tokio::spawn(executions.clone().watch_requests());
    tokio::spawn(feed::poll(app.feed.clone(), store.clone(), shutdown_rx));
    let (stop_accepting_tx, stop_accepting_rx) = watch::channel(false);
    let server = tokio::spawn(listen::serve(
        listener,
        router(app.clone()),
        listen::connection_cap(max_concurrent),
        stop_accepting_rx,
    ));

    signals.next().await;
    flowrun_app::say!("flowrun serve: shutting down");
    // A second Ctrl-C or SIGTERM ends at once (not a second SIGHUP: a closing terminal sends
    // two by itself); the runtimes of running children see their lifeline close and end their
    // groups, and the next flowrun start records them interrupted.
    tokio::spawn(async move {
        while !flowrun_app::signals::insists(signals.next().await) {}
        flowrun_app::say!("flowrun serve: second signal, exiting now");
        std::process::exit(130);
    });
    let _ = stop_accepting_tx.send(true);
    executions.shutdown().await;
    poller.abort();
    // Streams still open (following executions of other processes) end now.
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after 5 s; closing them");
    }
    // The token file stays for the next start on the same port; with `--port 0` there is no
    // such start, so the default file of a port picked at random goes with the server.
    if config.token_file.is_none() && config.port == 0 {
        let _ = std::fs::remove_file(&token_file);
    }
    Ok(())
}

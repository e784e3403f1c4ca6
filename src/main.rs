//! The `palaver` binary: parse the configuration, start logging, bind, and run until SIGINT or SIGTERM; or run one
//! of the subcommands (`palaver::cli`) and exit.

use clap::Parser;
use tracing_subscriber::EnvFilter;

// Fan-out allocates and frees a frame per socket; glibc's malloc spent ~12% of the server's CPU on it under load
// (BENCHMARKS.md §10).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = palaver::cli::Cli::parse();
    if let Some(command) = cli.command {
        // A subcommand's output is its stdout (JSON with --json): logs go to stderr.
        tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
        return palaver::cli::run(command).await;
    }
    let config = cli.config;
    let telemetry = match palaver::telemetry::init(&config.telemetry) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("palaver: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::debug!(?config, "configuration");
    let addr = config.listen_addr();
    let listener = match bind(addr) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = palaver::serve(config, listener, shutdown_signal()).await;
    // Spans still buffered are exported before the process ends.
    telemetry.shutdown().await;
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "palaver stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Binds with a deep accept queue: a burst of thousands of clients reconnecting at once must not overflow the
/// default backlog of 128 and wait for SYN retransmits.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

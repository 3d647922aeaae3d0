//! The one mecfed binary's library half: command-line parsing ([`cli`]), configuration
//! resolution ([`config`]) and the commands themselves. `main.rs` only parses and calls
//! [`run`].

mod agent;
pub mod cli;
pub mod config;
mod ctl;
mod up;

/// Resolves when the process gets SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

/// Starts `tracing` with the filter from `MECFED_LOG` (default `info`), logging to stderr.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MECFED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs the parsed command.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Up(args) => {
            let config = args.resolve()?;
            up::run(config).await
        }
        cli::Command::Agent(args) => agent::run(*args).await,
        cli::Command::Ctl(args) => ctl::run(args).await,
    }
}

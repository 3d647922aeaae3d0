//! `arena`: run the game server.

use std::{net::SocketAddr, time::Duration};

use arena::server::{Arena, ServerConfig, control_router, run_game};
use clap::Parser;

/// A real-time multiplayer game server with exportable sessions.
#[derive(Debug, Parser)]
#[command(name = "arena", version)]
struct Args {
    /// UDP address for game traffic.
    #[arg(long, env = "ARENA_GAME_LISTEN", default_value = "127.0.0.1:7000")]
    game_listen: SocketAddr,
    /// HTTP address of the control interface.
    #[arg(long, env = "ARENA_CONTROL_LISTEN", default_value = "127.0.0.1:7001")]
    control_listen: SocketAddr,
    /// Ticks per second.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1000))]
    tick_hz: u32,
    /// World bytes per new session.
    #[arg(long, default_value_t = 16 * 1024)]
    world_bytes: usize,
    /// Most players per session.
    #[arg(long, default_value_t = 16)]
    max_players: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARENA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("arena: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let registry = prometheus::Registry::new();
    let config = ServerConfig {
        tick_hz: args.tick_hz,
        world_bytes: args.world_bytes,
        max_players: args.max_players,
    };
    let arena = Arena::new(config, &registry).map_err(std::io::Error::other)?;
    let socket = std::net::UdpSocket::bind(args.game_listen)?;
    let control = tokio::net::TcpListener::bind(args.control_listen).await?;
    tracing::info!(
        game = %socket.local_addr()?,
        control = %control.local_addr()?,
        tick_hz = args.tick_hz,
        "arena up"
    );
    let router = control_router(arena.clone(), registry);
    // Run by a MEC platform: tell it the game is up.
    if let Some(mec) = arena::mec::MecPlatform::from_env() {
        tokio::spawn(async move {
            match mec.confirm_ready_retrying(Duration::from_secs(60)).await {
                Ok(()) => {
                    tracing::info!(instance = %mec.instance_id, "confirmed ready to the MEC platform")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not confirm readiness to the MEC platform")
                }
            }
        });
    }
    let (game_done, game_ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("arena-game".into())
        .spawn(move || {
            let _ = game_done.send(run_game(arena, socket));
        })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = game_ended => r.unwrap_or_else(|_| Err(std::io::Error::other("game thread died"))),
        r = axum::serve(control, router).into_future() => r,
        _ = term.recv() => Ok(()),
        r = tokio::signal::ctrl_c() => r,
    }
}

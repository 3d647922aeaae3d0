//! The `mecfed` binary: parses arguments, starts tracing, hands over to [`mecfed::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = mecfed::cli::Cli::parse();
    mecfed::init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mecfed: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mecfed::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mecfed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

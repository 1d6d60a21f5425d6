//! The `stuckless` binary: parses arguments, installs logging, runs the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = stuckless_cli::cli::Cli::parse();
    if let Err(e) = stuckless_cli::logging::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stuckless_cli::main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: what failed and why.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

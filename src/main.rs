use clap::Parser;

fn main() {
    drover::exec::gemm::single_threaded_blas();
    let cli = drover::cli::Cli::parse();
    // Commands that print and end (`drover sites | head`) stop quietly on a closed pipe,
    // as Unix tools do; the long-lived ones keep Rust's default (an error, handled).
    if !matches!(
        &cli.command,
        drover::cli::Cmd::Server(_) | drover::cli::Cmd::Worker { .. } | drover::cli::Cmd::Run { .. }
    ) {
        // SAFETY: setting a signal's disposition to the default before any thread starts.
        let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
    }
    let default = match &cli.command {
        drover::cli::Cmd::Server(_) => "info",
        // Workers of an embedded run: their parent reports what goes wrong (and stops
        // them when it ends, when one may still be dialling a server that is gone).
        drover::cli::Cmd::Worker { .. } if std::env::var_os(drover::cli::EMBEDDED_WORKER).is_some() => "error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal, never with NO_COLOR (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(f) = drover::cli::main(cli) {
        eprintln!("error: {}", f.message());
        std::process::exit(f.exit_code());
    }
}

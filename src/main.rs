use clap::Parser;

fn main() {
    drover::exec::gemm::single_threaded_blas();
    let cli = drover::cli::Cli::parse();
    let default = match &cli.command {
        drover::cli::Cmd::Server(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(f) = drover::cli::main(cli) {
        eprintln!("error: {}", f.message());
        std::process::exit(f.exit_code());
    }
}

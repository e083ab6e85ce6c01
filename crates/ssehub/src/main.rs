use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        // A log that cannot be written (its disk full) must not take the
        // hub down: by default the subscriber reports that with eprintln!,
        // which panics when stderr cannot be written either.
        .log_internal_errors(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    ssehub::cli::Cli::parse().run()
}

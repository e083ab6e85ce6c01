use clap::Parser;

fn main() -> std::process::ExitCode {
    // Logging starts inside: `serve` reads its format from its settings.
    ssehub::cli::Cli::parse().run()
}

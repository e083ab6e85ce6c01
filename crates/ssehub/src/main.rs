use clap::Parser;

fn main() -> std::process::ExitCode {
    ssehub::cli::Cli::parse().run()
}

//! The `ssehub` command line: one module per subcommand.

use std::process::ExitCode;

mod parse;
mod publish;
mod serve;
mod subscribe;

/// ssehub — a Server-Sent Events hub.
#[derive(Debug, clap::Parser)]
#[command(name = "ssehub", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Read a raw event stream on stdin and print what a browser would see,
    /// one JSON line per dispatched event or accepted `retry`.
    Parse,
    /// Run the hub.
    Serve(Box<crate::config::ServeArgs>),
    /// Publish one event to a hub.
    Publish(publish::PublishArgs),
    /// Follow topics on a hub, printing one JSON line per event; reconnects
    /// with Last-Event-ID and exits when every topic is complete.
    Subscribe(subscribe::SubscribeArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> ExitCode {
        let result: Result<(), Box<dyn std::error::Error>> = match self.command {
            Command::Parse => {
                parse::run(std::io::stdin().lock(), std::io::stdout().lock()).map_err(Into::into)
            }
            Command::Serve(args) => serve::run(*args),
            Command::Publish(args) => publish::run(args),
            Command::Subscribe(args) => subscribe::run(args),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ssehub: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every connection
/// is a file, and the default soft limit (often 1024) is far too low.
pub(crate) fn raise_open_files_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%err, "could not raise the open files limit");
    }
}

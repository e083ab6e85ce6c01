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
        if !matches!(self.command, Command::Serve(_)) {
            init_logging(crate::config::LogFormat::Text);
        }
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
                // Through the log once it is set up (a collector of
                // `--log-format json` must be able to read the last line).
                if tracing::dispatcher::has_been_set() {
                    tracing::error!("ssehub: {err}");
                } else {
                    eprintln!("ssehub: {err}");
                }
                ExitCode::FAILURE
            }
        }
    }
}

/// Log records go to stderr, filtered by `RUST_LOG` (default `info`), as
/// text or one JSON object per line.
pub(crate) fn init_logging(format: crate::config::LogFormat) {
    // The TLS and HTTP/2 libraries warn once per bad handshake or
    // misbehaving connection, which an attacker can make by the thousand;
    // the hub counts and logs what matters itself.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,rustls=error,h2=error,hyper=error")
    });
    let builder = tracing_subscriber::fmt()
        // A log that cannot be written (its disk full) must not take the
        // hub down: by default the subscriber reports that with eprintln!,
        // which panics when stderr cannot be written either.
        .log_internal_errors(false)
        .with_env_filter(filter)
        // Colours for a terminal only, not for a file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder.try_init(),
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Raises the soft limit on open files to the hard limit: every connection
/// is a file, and the default soft limit (often 1024) is far too low.
pub(crate) fn raise_open_files_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%err, "could not raise the open files limit");
    }
}

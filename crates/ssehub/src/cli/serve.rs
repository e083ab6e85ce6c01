//! `ssehub serve`: run the hub until SIGTERM or SIGINT.

use crate::config::ServeArgs;
use crate::http::Server;

/// Runs the server; returns when it has shut down.
pub fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.print_config {
        print!("{}", args.describe()?);
        return Ok(());
    }
    let config = args.resolve()?;
    super::init_logging(config.log_format);
    super::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if config.dev {
            tracing::warn!(
                "--dev: anyone can publish and use the admin API. Do not expose this hub."
            );
        }
        let server = Server::start(config).await?;
        // Handlers first: a SIGTERM right after the line below must shut the
        // hub down, not kill it.
        let signals = ShutdownSignals::install()?;
        // Printed (not only logged) so scripts and tests can find port 0's
        // pick; a stdout that cannot be written (a full disk) is no reason
        // to stop, as println! would.
        use std::io::Write;
        let mut stdout = std::io::stdout();
        let scheme = if server.is_https() { "https" } else { "http" };
        let _ = writeln!(stdout, "ssehub listening on {scheme}://{}", server.addr);
        if let Some(addr) = server.metrics_addr {
            let _ = writeln!(stdout, "metrics on http://{addr}/metrics");
        }
        let _ = stdout.flush();
        let trigger = server.shutdown_trigger();
        tokio::spawn(async move {
            signals.wait().await;
            tracing::info!("shutting down: ending streams with a retry hint");
            trigger.cancel();
        });
        server.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// SIGTERM and SIGINT, handled from the moment they are installed.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

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
        // Printed (not only logged) so scripts and tests can find port 0's pick.
        println!("ssehub listening on http://{}", server.addr);
        let trigger = server.shutdown_trigger();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: ending streams with a retry hint");
            trigger.cancel();
        });
        server.wait().await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

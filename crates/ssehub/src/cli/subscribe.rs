//! `ssehub subscribe`: follow topics like a browser would, printing events.

use std::io::Write;

use ssehub_client::{Hub, Subscribe};

/// Flags of `ssehub subscribe`.
#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    /// Hub base URL.
    #[arg(long, env = "SSEHUB_URL", default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// Bearer token.
    #[arg(long, env = "SSEHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Topic selectors.
    #[arg(required = true)]
    topics: Vec<String>,
    /// Resume after this id (`earliest` for all history).
    #[arg(long)]
    last_event_id: Option<String>,
    /// Client id for a per-client channel.
    #[arg(long)]
    client_id: Option<String>,
}

/// Prints one JSON line per event (`{"type","data","last_event_id"}`),
/// reconnecting with `Last-Event-ID`; exits when every topic is complete.
pub fn run(args: SubscribeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut hub = Hub::new(&args.hub);
    if let Some(token) = args.token {
        hub = hub.with_token(token);
    }
    let options = Subscribe {
        topics: args.topics,
        last_event_id: args.last_event_id,
        client_id: args.client_id,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut subscription = hub.subscribe(options);
        let mut out = std::io::stdout().lock();
        while let Some(event) = subscription.next().await {
            let event = event?;
            let line = serde_json::json!({
                "type": event.event_type,
                "data": event.data,
                "last_event_id": event.last_event_id,
            });
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    })
}

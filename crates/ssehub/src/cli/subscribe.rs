//! `ssehub subscribe`: follow topics like a browser would, printing events.

use std::io::Write;

use ssehub_client::{Hub, Live, Subscribe};

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
    #[arg(required_unless_present = "stream")]
    topics: Vec<String>,
    /// Read this Durable Stream instead: its data goes to stdout as it arrives (raw bytes; a
    /// JSON stream's messages one array per line), until the stream is closed.
    #[arg(long, conflicts_with_all = ["topics", "last_event_id", "client_id"])]
    stream: Option<String>,
    /// Where to start reading the stream: -1 (the start), now (only what comes), or an offset
    /// it gave.
    #[arg(long, default_value = "-1", requires = "stream")]
    offset: String,
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
    if let Some(name) = &args.stream {
        return read_stream(hub.stream(name), args.offset);
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

/// `--stream`: long-polls from the offset, printing the data, until the
/// stream is closed; after a failed request it goes on from the last offset.
fn read_stream(
    stream: ssehub_client::DurableStream,
    mut offset: String,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let json = stream
            .head()
            .await?
            .content_type
            .is_some_and(|t| t.starts_with("application/json"));
        let mut out = std::io::stdout().lock();
        let mut failures = 0u32;
        loop {
            let chunk = match stream.read(&offset, Live::LongPoll).await {
                Ok(chunk) => chunk,
                Err(ssehub_client::Error::Http(e)) if failures < 30 => {
                    failures += 1;
                    eprintln!("ssehub: {e}; reading again from {offset}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            failures = 0;
            let empty_array = json && chunk.data.as_ref() == b"[]";
            if !chunk.data.is_empty() && !empty_array {
                out.write_all(&chunk.data)?;
                if json {
                    out.write_all(b"\n")?;
                }
                out.flush()?;
            }
            offset = chunk.next_offset;
            if chunk.closed {
                return Ok(());
            }
        }
    })
}

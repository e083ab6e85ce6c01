//! `ssehub publish`: publish one event to any hub over HTTP.

use std::io::Read;

use ssehub_client::{Hub, Publish};

/// Flags of `ssehub publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Hub base URL.
    #[arg(long, env = "SSEHUB_URL", default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// Bearer token.
    #[arg(long, env = "SSEHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Topic (repeat for several).
    #[arg(long = "topic", short, required = true)]
    topics: Vec<String>,
    /// Data; read from stdin when absent.
    #[arg(long, short)]
    data: Option<String>,
    /// Event type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Event id (the hub assigns one when absent).
    #[arg(long)]
    id: Option<String>,
    /// Keep as the topic's current state for new subscribers.
    #[arg(long)]
    retain: bool,
    /// The topic is finished after this event.
    #[arg(long = "final")]
    is_final: bool,
    /// Only for subscribers authorized for the topic.
    #[arg(long)]
    private: bool,
}

/// Publishes and prints the event id.
pub fn run(args: PublishArgs) -> Result<(), Box<dyn std::error::Error>> {
    let data = match args.data {
        Some(data) => data,
        None => {
            let mut data = String::new();
            std::io::stdin().read_to_string(&mut data)?;
            data
        }
    };
    let mut hub = Hub::new(&args.hub);
    if let Some(token) = args.token {
        hub = hub.with_token(token);
    }
    let event = Publish {
        topic: args.topics,
        data,
        id: args.id,
        event_type: args.event_type,
        retry: None,
        private: args.private,
        retain: args.retain,
        is_final: args.is_final,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let id = runtime.block_on(hub.publish(&event))?;
    println!("{id}");
    Ok(())
}

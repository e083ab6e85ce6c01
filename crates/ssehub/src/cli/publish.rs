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
    #[arg(long = "topic", short, required_unless_present = "stream")]
    topics: Vec<String>,
    /// Append to this Durable Stream instead (created if missing): the data, or stdin piece by
    /// piece as it arrives (an LLM's answer piped in), then close it.
    #[arg(long, conflicts_with_all = ["topics", "event_type", "id", "retain", "is_final", "private"])]
    stream: Option<String>,
    /// The stream's content type (with --stream).
    #[arg(long, default_value = "text/plain", requires = "stream")]
    content_type: String,
    /// Leave the stream open at the end (with --stream).
    #[arg(long, requires = "stream")]
    keep_open: bool,
    /// Producer id of the appends (with --stream; each append is kept once, whatever the
    /// retries) [default: one of this run's own].
    #[arg(long, requires = "stream")]
    producer: Option<String>,
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

/// Publishes and prints the event id (with `--stream`: appends and prints
/// the stream's next offset).
pub fn run(args: PublishArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.stream.is_some() {
        return append_to_stream(args);
    }
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

/// `--stream`: creates the stream if it is not there, appends (stdin as it
/// arrives, each piece one append of an idempotent producer), and closes
/// it unless `--keep-open`.
fn append_to_stream(args: PublishArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut hub = Hub::new(&args.hub);
    if let Some(token) = args.token {
        hub = hub.with_token(token);
    }
    let stream = hub.stream(args.stream.as_deref().expect("--stream"));
    let producer_id = args.producer.unwrap_or_else(|| {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("ssehub-cli-{}-{}", std::process::id(), since.as_nanos())
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        stream.create(&args.content_type).await?;
        // A fixed producer id may have written before: a new epoch, from
        // the time, fences the earlier run and starts at seq 0.
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut producer = stream.producer(&producer_id, epoch, &args.content_type);
        let mut state = None;
        if let Some(data) = args.data {
            state = Some(producer.append(data.into_bytes(), !args.keep_open).await?);
        } else {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
            // stdin blocks: read it on a thread, and append each piece as
            // soon as it is there.
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buffer = vec![0u8; 64 << 10];
                loop {
                    let piece = match stdin.read(&mut buffer) {
                        Ok(0) => return,
                        Ok(n) => Ok(buffer[..n].to_vec()),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let failed = piece.is_err();
                    if tx.blocking_send(piece).is_err() || failed {
                        return;
                    }
                }
            });
            while let Some(piece) = rx.recv().await {
                state = Some(producer.append(piece?, false).await?);
            }
            if !args.keep_open {
                state = Some(producer.close().await?);
            }
        }
        let state = match state {
            Some(state) => state,
            None => stream.head().await?,
        };
        println!("{}", state.next_offset);
        Ok(())
    })
}

//! A broken or hostile server cannot exhaust the client's memory.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server whose event stream is one line that never ends.
async fn endless_line_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: ";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        // At most 64 MiB, four times the client's bound.
        for _ in 0..1024 {
            if socket.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    url
}

#[tokio::test]
async fn a_line_that_never_ends_is_an_error_not_a_growing_buffer() {
    let url = endless_line_server().await;
    let hub = ssehub_client::Hub::new(&url);
    let mut connection = hub
        .connect(&ssehub_client::Subscribe::topics(["t"]))
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(30), connection.next())
        .await
        .expect("an answer in time")
        .expect("an item");
    assert!(
        matches!(item, Err(ssehub_client::Error::EventTooLarge)),
        "{item:?}"
    );
}

//! The null server: the least work that puts events on every socket with
//! ssehub's write strategy, which is the machine's ceiling for ssehub.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `ssehub-bench null-server`: `GET /sub` holds a stream; `POST /publish`
/// encodes `data: BODY` once and hands it to every stream's writer, which
/// writes whatever is pending in one write, as ssehub does. No topics, ids,
/// history or checks: the least work that puts events on every socket with
/// the same write strategy, which is the machine's ceiling for ssehub.
pub async fn run(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("null server on {}", listener.local_addr()?);
    let (events, _) = tokio::sync::broadcast::channel::<bytes::Bytes>(65_536);
    loop {
        let (mut socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let events = events.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            let end = loop {
                let Ok(n) = socket.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
            };
            if head.starts_with(b"GET") {
                let mut receiver = events.subscribe();
                let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if socket.write_all(ok).await.is_err() {
                    return;
                }
                let mut pending = Vec::new();
                loop {
                    match receiver.recv().await {
                        Ok(bytes) => pending.extend_from_slice(&bytes),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    }
                    while let Ok(bytes) = receiver.try_recv() {
                        pending.extend_from_slice(&bytes);
                    }
                    if socket.write_all(&pending).await.is_err() {
                        return;
                    }
                    pending.clear();
                }
            } else {
                // Publishers: one request after another on the connection.
                let mut pending = head;
                let mut end = end;
                loop {
                    let length = String::from_utf8_lossy(&pending[..end])
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while pending.len() < end + length {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                    }
                    let mut event = b"data: ".to_vec();
                    event.extend_from_slice(&pending[end..end + length]);
                    event.extend_from_slice(b"\n\n");
                    let _ = events.send(bytes::Bytes::from(event));
                    if socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    pending.drain(..end + length);
                    end = loop {
                        if let Some(e) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break e + 4;
                        }
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                    };
                }
            }
        });
    }
}

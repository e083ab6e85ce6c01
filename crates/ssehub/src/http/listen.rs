//! The listening socket, with a backlog as deep as the operator asks.
//!
//! The standard library listens with a backlog of 128: after a restart, a
//! burst of reconnecting clients overflowed it and waited for SYN
//! retransmissions (1 s, then 3 s) while the hub sat idle. The kernel caps
//! the backlog at `net.core.somaxconn`, silently, so the depth in effect is
//! logged.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds `addr` and listens with `backlog` (capped by the kernel).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As the standard library does: a restarted hub can bind its port while
    // the old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let asked = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(asked)?;
    match kernel_cap() {
        Some(cap) if cap < backlog => tracing::info!(
            asked = backlog,
            "listen backlog {cap} (net.core.somaxconn; raise it with sysctl for deeper bursts)"
        ),
        _ => tracing::debug!(backlog, "listen backlog"),
    }
    TcpListener::from_std(socket.into())
}

/// `net.core.somaxconn`, where the system has it.
fn kernel_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

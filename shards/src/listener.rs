//! Listening sockets: one `SO_REUSEPORT` listener per shard on the same address.
//!
//! Owns: creating and binding the listeners before any shard thread starts, so a
//! bind error (port in use, permission) is returned synchronously by
//! `Runtime::start` as `StartError::Bind`.
//!
//! Invariants: all listeners share one concrete `SocketAddr`. With port 0 the first
//! socket binds an ephemeral port and the others bind that same port. The kernel
//! spreads incoming connections over the listeners (by 4-tuple hash). The sockets
//! are left blocking here; the shard makes its own non-blocking when it runs the
//! legacy driver (io_uring needs no `O_NONBLOCK`).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Binds `n` listeners on `addr`; returns them and the bound address.
pub(crate) fn bind_all(addr: SocketAddr, n: usize, backlog: i32) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let first = bind_one(addr, backlog)?;
    let bound = first.local_addr()?;
    let mut all = Vec::with_capacity(n);
    all.push(first);
    for _ in 1..n {
        all.push(bind_one(bound, backlog)?);
    }
    Ok((all, bound))
}

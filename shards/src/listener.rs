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
//!
//! `SO_REUSEPORT` lets any process of the same user bind the same address too, and the kernel
//! would then split clients between two servers (a second `madbase start` against another
//! database). So before binding, the address is probed with a socket that does not set
//! `SO_REUSEPORT`: if anything listens there already, the probe's bind fails and so does start.

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

/// Fails with `AddrInUse` when something already listens on `addr` (whether or not it set
/// `SO_REUSEPORT`). `SO_REUSEADDR` keeps connections in TIME_WAIT from a previous run from
/// counting; Linux still refuses it next to a listener.
fn refuse_shared_address(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.set_cloexec(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(io::ErrorKind::AddrInUse, "another process already listens on this address")
        } else {
            e
        }
    })
}

/// Binds `n` listeners on `addr`; returns them and the bound address.
pub(crate) fn bind_all(addr: SocketAddr, n: usize, backlog: i32) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    refuse_shared_address(addr)?;
    let first = bind_one(addr, backlog)?;
    let bound = first.local_addr()?;
    let mut all = Vec::with_capacity(n);
    all.push(first);
    for _ in 1..n {
        all.push(bind_one(bound, backlog)?);
    }
    Ok((all, bound))
}

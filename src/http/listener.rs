//! The shard's listening socket, built by hand so the backlog is configurable (glommio's own
//! `bind` hard-codes 1024) while keeping `SO_REUSEPORT`, which lets every shard accept on the same
//! address and the kernel spread connections between them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// A shard's listener, which can stop listening at once (see [`ShardListener::close`]).
pub struct ShardListener {
    inner: glommio::net::TcpListener,
    fd: RawFd,
}

impl ShardListener {
    /// The listener to accept from.
    pub fn listener(&self) -> &glommio::net::TcpListener {
        &self.inner
    }

    /// Stops listening now. `shutdown(SHUT_RD)` takes a listening socket out of LISTEN at once:
    /// the kernel stops routing new connections to it (to another shard's listener while one is
    /// left, otherwise refusing them) and fails a pending accept. Dropping alone would leave it
    /// listening until glommio has processed the cancellation of its in-flight io_uring accept,
    /// which holds a reference to the socket.
    pub fn close(self) {
        // SAFETY: `inner` owns `fd` and is alive until the drop below.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read);
        drop(self.inner);
    }
}

/// Binds a `SO_REUSEPORT` listener on `addr` with the given accept backlog.
pub fn bind_reuseport(addr: SocketAddr, backlog: u32) -> io::Result<ShardListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    let fd = socket.into_raw_fd();
    // SAFETY: the fd is a freshly created, bound and listening TCP socket whose ownership moves
    // into the glommio listener; `ShardListener` keeps the number only to shut it down while the
    // listener still owns it.
    let inner = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
    Ok(ShardListener { inner, fd })
}

/// Fails if another process already listens on `addr`. `SO_REUSEPORT` would otherwise let a
/// second seckill share the port, and the kernel would split shoppers between two independent
/// ledgers, each selling the whole stock. The probe uses `SO_REUSEADDR` only, so connections left
/// in TIME_WAIT by a previous run do not count; only a live listener does.
pub fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()).and_then(|()| probe.listen(1)) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use, perhaps by another seckill; refusing to share it"),
        )),
        Err(error) => Err(error),
    }
}

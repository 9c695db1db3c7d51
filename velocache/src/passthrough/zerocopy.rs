//! Zero-copy TCP splicing with `splice(2)`: socket → pipe → socket, the bytes never enter
//! userspace (what HAProxy does for its TCP mode). Used when both ends are plain TCP sockets;
//! TLS-terminated streams go through the ordinary copy.
use std::{
    io,
    net::Shutdown,
    os::fd::OwnedFd,
    sync::atomic::{AtomicU64, Ordering},
};

use nix::{
    fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice},
    unistd::pipe2,
};
use tokio::{io::Interest, net::TcpStream};

/// Bytes moved per `splice` call and the pipe size asked for (the kernel may cap it).
const CHUNK: usize = 1 << 20;

/// Copy both ways between `a` and `b` until both directions reached end of stream, counting
/// `a → b` in `ab` and `b → a` in `ba`. Each direction's end is passed on as a half-close.
pub async fn bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    ab: &AtomicU64,
    ba: &AtomicU64,
) -> io::Result<()> {
    tokio::try_join!(pump(a, b, ab), pump(b, a, ba)).map(|_| ())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // A larger pipe means fewer round trips through the reactor for bulk transfers; the
    // default (64 KiB) still works if the limit refuses it.
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    Ok((r, w))
}

async fn pump(src: &TcpStream, dst: &TcpStream, counter: &AtomicU64) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe()?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // Fill the pipe from the source; EAGAIN here can only mean "no data yet", because the
        // pipe is always empty when we get here.
        let mut in_pipe = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe_w, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if in_pipe == 0 {
            // The source finished sending: pass the half-close on.
            return match socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
                Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                _ => Ok(()),
            };
        }
        // Drain the pipe into the destination; EAGAIN means its send buffer is full.
        while in_pipe > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe_r, None, dst, None, in_pipe, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    in_pipe -= n;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    #[tokio::test]
    async fn moves_bulk_data_both_ways_with_half_close() {
        // client <-> [a | b] <-> server, b spliced to a.
        let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a1, b1) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        let mut client = TcpStream::connect(a1).await.unwrap();
        let (a, _) = l1.accept().await.unwrap();
        let b = TcpStream::connect(b1).await.unwrap();
        let (mut server, _) = l2.accept().await.unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let server_task = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(b"thanks").await.unwrap();
            got
        });
        let (ab, ba) = (AtomicU64::new(0), AtomicU64::new(0));
        let relay = bidirectional(&a, &b, &ab, &ba);
        let client_side = async {
            client.write_all(&data).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        };
        let (relayed, back) = tokio::join!(relay, client_side);
        relayed.unwrap();
        assert_eq!(back, b"thanks");
        assert_eq!(server_task.await.unwrap(), expected);
        assert_eq!(ab.load(Ordering::Relaxed), 3_000_000);
        assert_eq!(ba.load(Ordering::Relaxed), 6);
    }
}

//! The io_uring thread: every file operation of the disk store goes through one ring, driven by
//! one dedicated OS thread, so that tokio's workers never block on the disk.
//!
//! Requests ([`Op`]) enter through a channel; the thread turns each into a submission queue
//! entry, keeps the buffers and paths the kernel points into alive until the completion
//! arrives, and answers through a oneshot channel. An `eventfd` read is always armed in the
//! ring so that a request sent while the thread waits for completions wakes it at once.
//!
//! This module holds the daemon's second fence of `unsafe` code (after `datapath/sys.rs`):
//! pushing an entry to a submission queue is `unsafe` because the kernel will read and write the
//! memory it points to until the operation completes. Every entry is built from memory owned by
//! the in-flight table, which is only emptied when that entry's completion has been reaped.
#![allow(unsafe_code)]

use std::{
    ffi::CString,
    fs::File,
    io::{self, Write as _},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
};

use bytes::{Bytes, BytesMut};
use io_uring::{IoUring, opcode, squeue, types};
use tokio::sync::oneshot;
use tracing::{debug, error};

/// One file operation.
pub enum Op {
    /// `openat(AT_FDCWD, path, flags, mode)`.
    Open {
        /// Path.
        path: CString,
        /// `O_*` flags.
        flags: i32,
        /// Mode for created files.
        mode: u32,
        /// Answer.
        reply: oneshot::Sender<io::Result<OwnedFd>>,
    },
    /// `pread(fd, len, offset)`; a short read returns fewer bytes.
    Read {
        /// File.
        fd: Arc<OwnedFd>,
        /// Offset.
        offset: u64,
        /// Bytes wanted.
        len: usize,
        /// Answer.
        reply: oneshot::Sender<io::Result<Bytes>>,
    },
    /// `pwrite` of all of `data` at `offset` (short writes are continued).
    Write {
        /// File.
        fd: Arc<OwnedFd>,
        /// Offset.
        offset: u64,
        /// Data.
        data: Bytes,
        /// Answer.
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// `fdatasync`.
    Sync {
        /// File.
        fd: Arc<OwnedFd>,
        /// Answer.
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// `renameat(from, to)`.
    Rename {
        /// Old path.
        from: CString,
        /// New path.
        to: CString,
        /// Answer.
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// `unlinkat` of a file, or of an empty directory with `dir`.
    Unlink {
        /// Path.
        path: CString,
        /// `AT_REMOVEDIR`.
        dir: bool,
        /// Answer.
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// `mkdirat`.
    MkDir {
        /// Path.
        path: CString,
        /// Answer.
        reply: oneshot::Sender<io::Result<()>>,
    },
}

/// Handle on the ring thread; cheap to clone. The thread exits when the last handle is gone
/// and every operation in flight has completed.
#[derive(Clone)]
pub struct Uring {
    inner: Arc<Handle>,
}

struct Handle {
    tx: mpsc::Sender<Op>,
    wake: File,
    parked: Arc<AtomicBool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The sender drops right after this; wake the thread so it sees the hang-up.
        let _ = (&self.wake).write(&1u64.to_ne_bytes());
    }
}

const WAKE: u64 = u64::MAX;

impl Uring {
    /// Start the ring thread with `entries` submission slots.
    pub fn start(entries: u32) -> io::Result<Uring> {
        let ring = IoUring::new(entries)?;
        // SAFETY: eventfd(2) has no memory arguments; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(raw) };
        let wake = File::from(efd.try_clone()?);
        let (tx, rx) = mpsc::channel();
        let parked = Arc::new(AtomicBool::new(false));
        let thread_parked = parked.clone();
        std::thread::Builder::new()
            .name("velocache-uring".into())
            .spawn(move || Ring::new(ring, efd, rx, thread_parked).run())?;
        Ok(Uring {
            inner: Arc::new(Handle { tx, wake, parked }),
        })
    }

    /// Queue `op`. If the thread is gone the op's reply channel is dropped and its caller sees
    /// an error.
    pub fn send(&self, op: Op) {
        if self.inner.tx.send(op).is_ok() && self.inner.parked.swap(false, Ordering::AcqRel) {
            let _ = (&self.inner.wake).write(&1u64.to_ne_bytes());
        }
    }

    /// Open `path`.
    pub async fn open(&self, path: CString, flags: i32, mode: u32) -> io::Result<Arc<OwnedFd>> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Open {
            path,
            flags: flags | libc::O_CLOEXEC,
            mode,
            reply,
        });
        rx.await.unwrap_or_else(|_| Err(gone())).map(Arc::new)
    }

    /// Read up to `len` bytes at `offset`.
    pub async fn read(&self, fd: Arc<OwnedFd>, offset: u64, len: usize) -> io::Result<Bytes> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Read {
            fd,
            offset,
            len,
            reply,
        });
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Write all of `data` at `offset`.
    pub async fn write(&self, fd: Arc<OwnedFd>, offset: u64, data: Bytes) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Write {
            fd,
            offset,
            data,
            reply,
        });
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// `fdatasync`.
    pub async fn sync(&self, fd: Arc<OwnedFd>) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Sync { fd, reply });
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Atomically rename `from` to `to`.
    pub async fn rename(&self, from: CString, to: CString) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Rename { from, to, reply });
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Remove a file (or an empty directory).
    pub async fn unlink(&self, path: CString, dir: bool) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Unlink { path, dir, reply });
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Create a directory (an existing one is not an error).
    pub async fn mkdir(&self, path: CString) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::MkDir { path, reply });
        match rx.await.unwrap_or_else(|_| Err(gone())) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the io_uring thread has stopped")
}

/// An operation the kernel is working on, with everything its entry points into.
enum InFlight {
    Open {
        _path: CString,
        reply: oneshot::Sender<io::Result<OwnedFd>>,
    },
    Read {
        _fd: Arc<OwnedFd>,
        buf: BytesMut,
        reply: oneshot::Sender<io::Result<Bytes>>,
    },
    Write {
        fd: Arc<OwnedFd>,
        offset: u64,
        data: Bytes,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Unit {
        _keep: Keep,
        reply: oneshot::Sender<io::Result<()>>,
    },
}

/// Memory an entry points into, kept until its completion.
enum Keep {
    Fd(#[expect(dead_code, reason = "held only to keep the fd open")] Arc<OwnedFd>),
    Paths(
        #[expect(dead_code, reason = "held only to keep the path alive")] CString,
        #[expect(dead_code, reason = "held only to keep the path alive")] Option<CString>,
    ),
}

struct Ring {
    ring: IoUring,
    efd: OwnedFd,
    wake_buf: Box<[u8; 8]>,
    rx: mpsc::Receiver<Op>,
    parked: Arc<AtomicBool>,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    in_flight: usize,
    hung_up: bool,
}

impl Ring {
    fn new(ring: IoUring, efd: OwnedFd, rx: mpsc::Receiver<Op>, parked: Arc<AtomicBool>) -> Ring {
        Ring {
            ring,
            efd,
            wake_buf: Box::new([0; 8]),
            rx,
            parked,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            hung_up: false,
        }
    }

    fn run(mut self) {
        self.arm_wake();
        loop {
            // Take every queued request before sleeping.
            loop {
                match self.rx.try_recv() {
                    Ok(op) => self.start(op),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.hung_up = true;
                        break;
                    }
                }
            }
            if self.hung_up && self.in_flight == 0 {
                debug!("io_uring thread done");
                return;
            }
            self.parked.store(true, Ordering::Release);
            // A request that raced with `parked` is picked up without sleeping.
            match self.rx.try_recv() {
                Ok(op) => {
                    self.parked.store(false, Ordering::Release);
                    self.start(op);
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => self.hung_up = true,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if let Err(e) = self.ring.submit_and_wait(1)
                && e.raw_os_error() != Some(libc::EINTR)
            {
                error!(error = %e, "io_uring wait failed; the disk cache stops");
                return;
            }
            self.parked.store(false, Ordering::Release);
            self.reap();
        }
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.efd.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            8,
        )
        .build()
        .user_data(WAKE);
        self.push(entry);
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry points into memory owned by `self` (the wake buffer) or by
            // the in-flight slot registered under its user_data, which lives until reaped.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            // Queue full: hand what is queued to the kernel, then retry.
            if let Err(e) = self.ring.submit() {
                error!(error = %e, "io_uring submit failed");
                // Never leave a caller waiting for an operation the kernel will not see.
                self.complete(
                    entry.get_user_data(),
                    -e.raw_os_error().unwrap_or(libc::EIO),
                );
                return;
            }
        }
    }

    fn slot(&mut self, f: InFlight) -> u64 {
        self.in_flight += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(f);
                i as u64
            }
            None => {
                self.slots.push(Some(f));
                (self.slots.len() - 1) as u64
            }
        }
    }

    fn start(&mut self, op: Op) {
        match op {
            Op::Open {
                path,
                flags,
                mode,
                reply,
            } => {
                let ptr = path.as_ptr();
                let id = self.slot(InFlight::Open { _path: path, reply });
                let e = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), ptr)
                    .flags(flags)
                    .mode(mode)
                    .build()
                    .user_data(id);
                self.push(e);
            }
            Op::Read {
                fd,
                offset,
                len,
                reply,
            } => {
                let len = len.min(u32::MAX as usize);
                // Not zeroed: the kernel fills it, and only what it reports is exposed.
                let mut buf = BytesMut::with_capacity(len);
                let (raw, ptr) = (
                    fd.as_raw_fd(),
                    buf.spare_capacity_mut().as_mut_ptr().cast::<u8>(),
                );
                let id = self.slot(InFlight::Read {
                    _fd: fd,
                    buf,
                    reply,
                });
                let e = opcode::Read::new(types::Fd(raw), ptr, len as u32)
                    .offset(offset)
                    .build()
                    .user_data(id);
                self.push(e);
            }
            Op::Write {
                fd,
                offset,
                data,
                reply,
            } => self.start_write(fd, offset, data, reply),
            Op::Sync { fd, reply } => {
                let raw = fd.as_raw_fd();
                let id = self.slot(InFlight::Unit {
                    _keep: Keep::Fd(fd),
                    reply,
                });
                let e = opcode::Fsync::new(types::Fd(raw))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(id);
                self.push(e);
            }
            Op::Rename { from, to, reply } => {
                let (a, b) = (from.as_ptr(), to.as_ptr());
                let id = self.slot(InFlight::Unit {
                    _keep: Keep::Paths(from, Some(to)),
                    reply,
                });
                let e = opcode::RenameAt::new(
                    types::Fd(libc::AT_FDCWD),
                    a,
                    types::Fd(libc::AT_FDCWD),
                    b,
                )
                .build()
                .user_data(id);
                self.push(e);
            }
            Op::Unlink { path, dir, reply } => {
                let p = path.as_ptr();
                let id = self.slot(InFlight::Unit {
                    _keep: Keep::Paths(path, None),
                    reply,
                });
                let e = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), p)
                    .flags(if dir { libc::AT_REMOVEDIR } else { 0 })
                    .build()
                    .user_data(id);
                self.push(e);
            }
            Op::MkDir { path, reply } => {
                let p = path.as_ptr();
                let id = self.slot(InFlight::Unit {
                    _keep: Keep::Paths(path, None),
                    reply,
                });
                let e = opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), p)
                    .mode(0o755)
                    .build()
                    .user_data(id);
                self.push(e);
            }
        }
    }

    fn start_write(
        &mut self,
        fd: Arc<OwnedFd>,
        offset: u64,
        data: Bytes,
        reply: oneshot::Sender<io::Result<()>>,
    ) {
        if data.is_empty() {
            let _ = reply.send(Ok(()));
            return;
        }
        let (raw, ptr, len) = (
            fd.as_raw_fd(),
            data.as_ptr(),
            data.len().min(u32::MAX as usize),
        );
        let id = self.slot(InFlight::Write {
            fd,
            offset,
            data,
            reply,
        });
        let e = opcode::Write::new(types::Fd(raw), ptr, len as u32)
            .offset(offset)
            .build()
            .user_data(id);
        self.push(e);
    }

    fn reap(&mut self) {
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (id, res) in done {
            if id == WAKE {
                self.arm_wake();
                continue;
            }
            self.complete(id, res);
        }
    }

    /// Answer the operation registered under `id` with the kernel's result `res`.
    fn complete(&mut self, id: u64, res: i32) {
        let Some(f) = self.slots.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.in_flight -= 1;
        self.free.push(id as usize);
        let result = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as usize)
        };
        match f {
            InFlight::Open { reply, .. } => {
                let _ = reply.send(result.map(|fd| {
                    // SAFETY: a successful openat completion's result is a new descriptor
                    // owned by nobody else.
                    unsafe { OwnedFd::from_raw_fd(fd as i32) }
                }));
            }
            InFlight::Read { mut buf, reply, .. } => {
                let _ = reply.send(result.map(|n| {
                    let n = n.min(buf.capacity());
                    // SAFETY: the read completed and the kernel wrote exactly `n` bytes at
                    // the start of the buffer's spare capacity.
                    unsafe { buf.set_len(n) };
                    buf.freeze()
                }));
            }
            InFlight::Write {
                fd,
                offset,
                data,
                reply,
            } => match result {
                Ok(0) => {
                    let _ = reply.send(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) if n < data.len() => {
                    self.start_write(fd, offset + n as u64, data.slice(n..), reply)
                }
                Ok(_) => {
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            InFlight::Unit { reply, .. } => {
                let _ = reply.send(result.map(|_| ()));
            }
        }
    }
}

/// A path as the kernel wants it.
pub fn cpath(p: &std::path::Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

#[cfg(test)]
#[path = "uring_tests.rs"]
mod tests;

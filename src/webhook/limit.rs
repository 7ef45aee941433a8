//! The intake's bound on open connections (issue 21, item 10: 1,100 connections that never
//! finished their headers took every file descriptor, and each valid delivery timed out).
//!
//! At most `cap` connections are open at once. A connection accepted past the cap closes
//! the oldest one: a flood of slow clients loses its own connections first (it opened them
//! first), while a forge's delivery, which takes milliseconds, gets a connection. Together
//! with the intake's timeouts (TLS handshake, headers, first request, body; see
//! [`super::intake`]) this bounds both the file descriptors and how long anyone holds one.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The cap for a process whose soft `RLIMIT_NOFILE` is `nofile`: half of it (the rest is
/// for git processes, files and sockets of the daemon's other work), between 64 and 4,096.
pub fn cap_for(nofile: u64) -> usize {
    usize::try_from(nofile / 2).unwrap_or(4096).clamp(64, 4096)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as Go's runtime and systemd's own
/// services do; the soft default of 1,024 is for `select(2)`, which gitsync does not use)
/// and returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// One open connection's place in line.
#[derive(Default)]
struct Slot {
    closed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    /// Marks the connection closed and wakes its reader, which then fails.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The open connections, oldest first.
type Line = Arc<Mutex<VecDeque<Arc<Slot>>>>;

/// An `axum_server` acceptor that keeps at most `cap` connections open (see the module
/// documentation). Put it first (before TLS), so that a handshake counts too.
#[derive(Clone)]
pub struct Limiter {
    line: Line,
    cap: usize,
}

impl Limiter {
    /// A limiter of `cap` connections (at least 1).
    pub fn new(cap: usize) -> Limiter {
        Limiter {
            line: Arc::new(Mutex::new(VecDeque::new())),
            cap: cap.max(1),
        }
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.line.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl<I, S> axum_server::accept::Accept<I, S> for Limiter
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    type Stream = Limited<I>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Limited<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let slot = Arc::new(Slot::default());
        {
            let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
            if line.len() >= self.cap {
                tracing::debug!(
                    cap = self.cap,
                    "webhook intake at its connection cap: the oldest connection is closed"
                );
            }
            while line.len() >= self.cap {
                if let Some(oldest) = line.pop_front() {
                    oldest.close();
                }
            }
            line.push_back(slot.clone());
        }
        std::future::ready(Ok((
            Limited {
                inner: stream,
                slot,
                line: self.line.clone(),
            },
            service,
        )))
    }
}

/// A connection counted by a [`Limiter`]; reading fails once the limiter closed it, and
/// dropping it gives its place back.
pub struct Limited<I> {
    inner: I,
    slot: Arc<Slot>,
    line: Line,
}

impl<I> Drop for Limited<I> {
    fn drop(&mut self) {
        let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = line.iter().position(|s| Arc::ptr_eq(s, &self.slot)) {
            line.remove(at);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Limited<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.slot.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed: too many connections",
            )));
        }
        *self.slot.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum_server::accept::Accept;
    use tokio::io::AsyncReadExt;

    #[test]
    fn the_cap_is_half_the_descriptors_within_bounds() {
        assert_eq!(cap_for(1024), 512);
        assert_eq!(cap_for(10), 64);
        assert_eq!(cap_for(1 << 20), 4096);
    }

    /// Past the cap, the oldest connection's reads fail (a pending read is woken), and a
    /// closed connection gives its place back.
    #[tokio::test]
    async fn past_the_cap_the_oldest_connection_is_closed() {
        let limiter = Limiter::new(2);
        let (a, _a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        let (c, mut c_peer) = tokio::io::duplex(64);
        let (mut a, ()) = limiter.accept(a, ()).await.expect("a");
        let pending = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            a.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        let (b, ()) = limiter.accept(b, ()).await.expect("b");
        assert_eq!(limiter.open(), 2);
        let (mut c, ()) = limiter.accept(c, ()).await.expect("c");
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), pending)
            .await
            .expect("the oldest reader was woken")
            .expect("task");
        assert_eq!(
            read.expect_err("closed").kind(),
            io::ErrorKind::ConnectionAborted
        );
        assert_eq!(limiter.open(), 2, "b and c");
        drop(b);
        assert_eq!(limiter.open(), 1);
        tokio::io::AsyncWriteExt::write_all(&mut c_peer, b"hi")
            .await
            .expect("write");
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.expect("c still reads");
        assert_eq!(&buf, b"hi");
    }
}

//! Small adapters that let hyper run on glommio: an executor for HTTP/2 stream tasks, a
//! timer, and a socket wrapper that bounds how long a new connection may stay silent.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};
use futures::FutureExt;

/// Spawns hyper's per-stream HTTP/2 tasks on the current shard; they need not be `Send`.
#[derive(Clone, Copy)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}

/// hyper's timers must be `Send`, which glommio's are not, so they run on the storage
/// sidecar's tokio runtime; the waking crosses threads, which glommio supports.
#[derive(Clone)]
pub struct SidecarTimer(pub tokio::runtime::Handle);

struct TokioSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for TokioSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for TokioSleep {}

impl hyper::rt::Timer for SidecarTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let _enter = self.0.enter();
        Box::pin(TokioSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let _enter = self.0.enter();
        Box::pin(TokioSleep(Box::pin(tokio::time::sleep_until(
            deadline.into(),
        ))))
    }
}

/// Set once the connection has produced its first request; from then on hyper's own
/// timeouts govern it.
pub type FirstRequestSeen = Rc<Cell<bool>>;

/// A socket that fails reads with `TimedOut` if the peer has not completed a first request
/// within `limit` of accepting it. Before the first request hyper does protocol detection,
/// which has no timeout of its own; this closes the door on clients that connect and stall.
pub struct Guarded<S> {
    inner: S,
    seen: FirstRequestSeen,
    deadline: Option<Pin<Box<glommio::timer::Timer>>>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, limit: Duration, seen: FirstRequestSeen) -> Guarded<S> {
        Guarded {
            inner,
            seen,
            deadline: Some(Box::pin(glommio::timer::Timer::new(limit))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if result.is_ready() {
            return result;
        }
        if this.seen.get() {
            this.deadline = None;
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.poll_unpin(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the first-request deadline",
                )));
            }
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

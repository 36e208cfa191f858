//! Small adapters that let hyper run on glommio: an executor for HTTP/2 stream tasks, a
//! timer, a socket wrapper that bounds how long a new connection may stay silent, and one
//! that gives hyper's own 431 a JSON error body.

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

/// The status line hyper writes, with an empty body, when a request head is over its
/// limits (bytes or header count), before closing the connection.
const BARE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";
const EMPTY_BODY: &[u8] = b"content-length: 0\r\n";

/// What a refused request head gets instead of hyper's empty body.
fn headers_too_large_body() -> String {
    serde_json::json!({
        "code": "header_fields_too_large",
        "message": format!(
            "Request headers exceed {} KiB or {} fields",
            super::HEADER_BYTES_MAX / 1024,
            super::HEADERS_COUNT_MAX
        ),
    })
    .to_string()
}

/// Gives hyper's bare `431` the S2 JSON error body every other error has. hyper writes
/// that response itself (it never reaches the API), whole, in one write; it is rewritten
/// here on its way out.
pub struct HeadErrorBody<S> {
    inner: S,
    /// The rewritten response, how much of it is written, and the length of the write it
    /// replaces (reported once all of it is out).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> HeadErrorBody<S> {
    pub fn new(inner: S) -> HeadErrorBody<S> {
        HeadErrorBody {
            inner,
            pending: None,
        }
    }
}

/// The response with a JSON body, if `buf` is hyper's whole bare 431.
fn with_json_body(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(BARE_431) || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let at = buf
        .windows(EMPTY_BODY.len())
        .position(|w| w.eq_ignore_ascii_case(EMPTY_BODY))?;
    let body = headers_too_large_body();
    let mut out = Vec::with_capacity(buf.len() + body.len() + 64);
    out.extend_from_slice(&buf[..at]);
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(&buf[at + EMPTY_BODY.len()..]);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<S: AsyncWrite + Unpin> HeadErrorBody<S> {
    /// Write out the rewritten response; `Ready(Some(n))` once done, `n` being the length
    /// of the write it replaced.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some((bytes, written, replaced)) = self.pending.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let replaced = *replaced;
        self.pending = None;
        Poll::Ready(Ok(Some(replaced)))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadErrorBody<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadErrorBody<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            if let Some(bytes) = with_json_body(buf) {
                this.pending = Some((bytes, 0, buf.len()));
            }
        }
        match this.drain(cx) {
            Poll::Ready(Ok(Some(replaced))) => Poll::Ready(Ok(replaced)),
            Poll::Ready(Ok(None)) => Pin::new(&mut this.inner).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(_)) => Pin::new(&mut self.inner).poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(_)) => Pin::new(&mut self.inner).poll_close(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bare_431_gets_a_body() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                     content-length: 0\r\ndate: Wed, 02 Dec 2026 16:32:37 GMT\r\n\r\n";
        let out = String::from_utf8(with_json_body(bare).expect("rewritten")).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, headers_too_large_body());
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(!head.contains("content-length: 0"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "header_fields_too_large");
        // Anything else passes untouched: other statuses, or a 431 that has a body.
        assert!(with_json_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(with_json_body(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 5\r\n\r\nhello"
        )
        .is_none());
        assert!(
            with_json_body(&bare[..bare.len() - 2]).is_none(),
            "a partial write"
        );
    }
}

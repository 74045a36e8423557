//! Accepted gRPC connections: the TCP stream as tonic gets it, with one
//! change, that it reports no vectored writes.
//!
//! Why: HTTP/2 (h2) copies a DATA frame into its write buffer, where replies
//! to many requests coalesce into one `writev`, only when the frame is
//! smaller than its chain threshold: 256 bytes on a transport with vectored
//! writes, 1024 without. An allowed ext_authz Check reply is about 310 bytes
//! (identity headers, dynamic metadata), so on a vectored transport every
//! reply went out in its own system call: 1.8 `writev` per Check against 0.7
//! per Health/Check under the same load, and a third less throughput (see
//! BENCHMARKS.md). Without vectored writes h2 copies the frame (a few hundred
//! bytes) and keeps coalescing. Replies of 1 KiB and more are unaffected.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A TCP stream that tells HTTP/2 to buffer small frames (see the module doc).
#[derive(Debug)]
pub struct CoalescingStream(pub TcpStream);

impl Connected for CoalescingStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for CoalescingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for CoalescingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    // Still correct if a caller writes vectored anyway: the default writes
    // the first non-empty slice.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(&mut self.0).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

//! A listener whose connections a handler can sever: once a handler calls
//! [`Conn::sever`], every read and write on its connection fails and the socket closes
//! with RST, so the client sees a reset and no response at all.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP stream that fails every operation once its connection has been severed.
pub struct Severable {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl Severable {
    fn severed(&self) -> io::Result<()> {
        if self.kill.load(Ordering::SeqCst) {
            // Best effort: RST instead of FIN on close.
            let _ = self.inner.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "sandbox fault: connection reset",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Severable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.severed()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Severable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.severed()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.severed()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The listener handing out [`Severable`] streams (no Nagle delay, like a CRM's edge).
pub struct SeverableListener(pub TcpListener);

impl axum::serve::Listener for SeverableListener {
    type Io = Severable;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let _ = inner.set_nodelay(true);
                    let stream = Severable {
                        inner,
                        kill: Arc::new(AtomicBool::new(false)),
                    };
                    return (stream, addr);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "sandbox: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// What a handler knows about its connection (`ConnectInfo<Conn>`): enough to sever it.
#[derive(Clone)]
pub struct Conn {
    kill: Arc<AtomicBool>,
}

impl Conn {
    /// Severs the connection this request came on: the answer is never written.
    pub fn sever(&self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, SeverableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, SeverableListener>) -> Self {
        Self {
            kill: stream.io().kill.clone(),
        }
    }
}

/// Serves `app` on `listener` with severable connections until `stop` turns `true`,
/// then lets in-flight requests finish (graceful shutdown).
pub fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let app = app.into_make_service_with_connect_info::<Conn>();
    tokio::spawn(async move {
        let serve =
            axum::serve(SeverableListener(listener), app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "sandbox: server stopped with an error");
        }
    })
}

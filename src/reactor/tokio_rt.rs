//! The `tokio` reactor: one multi-threaded, work-stealing tokio runtime.
//! Its accept loop is shared with the `per-core` reactor.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;

use super::connection::{self, Connections, Serving};
use super::fast_path::Session;
use super::tls::TlsConfig;
use super::{ConnectionInfo, Handler, Listener, Options, Udp, datagram};
use crate::shutdown::Shutdown;

pub(super) fn serve<M, S>(
    options: &Options,
    groups: Vec<Vec<Listener>>,
    mut udp: Udp,
    open: Connections,
    make_service: M,
    shutdown: Shutdown,
) -> io::Result<()>
where
    M: Fn(ConnectionInfo) -> S + Send + Sync + 'static,
    S: Handler,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .thread_name("shoal-worker")
        .enable_io()
        .enable_time()
        .build()?;
    let serving = Arc::new(Serving::new(options));
    let make_service = Arc::new(make_service);
    let grace = options.shutdown_grace;
    let options = options.clone();
    runtime.block_on(async move {
        // Each worker's UDP sockets get a task; the runtime spreads them.
        let mut udp_loops = Vec::new();
        for worker in 0..options.workers {
            for socket in udp.of_worker(worker) {
                let (handler, shutdown) = (udp.handler.clone(), shutdown.clone());
                udp_loops.push(tokio::spawn(datagram::serve_tokio(
                    socket, handler, shutdown,
                )));
            }
        }
        let mut accept_loops = Vec::new();
        for listener in groups.into_iter().flatten() {
            accept_loops.push(tokio::spawn(accept_loop(
                TcpListener::from_std(listener.socket)?,
                listener.index,
                listener.tls.then(|| options.tls.clone()).flatten(),
                serving.clone(),
                make_service.clone(),
                open.clone(),
                shutdown.clone(),
            )));
        }
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        for udp_loop in udp_loops {
            udp_loop.await.map_err(io::Error::other)??;
        }
        drain(&open, grace).await;
        Ok(())
    })
}

/// Waits until the open connections have finished or `grace` has passed.
pub(super) async fn drain(open: &Connections, grace: Duration) {
    let deadline = Instant::now() + grace;
    while open.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Accepts connections until shutdown, each served on its own task of the
/// current runtime.
pub(super) async fn accept_loop<M, S>(
    listener: TcpListener,
    index: usize,
    tls: Option<Arc<TlsConfig>>,
    serving: Arc<Serving>,
    make_service: Arc<M>,
    open: Connections,
    shutdown: Shutdown,
) where
    M: Fn(ConnectionInfo) -> S + Send + Sync + 'static,
    S: Handler,
{
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if super::SET_NODELAY_ON_ACCEPT {
            let _ = stream.set_nodelay(true);
        }
        let Some(guard) = open.admit() else {
            tracing::debug!(%remote, "connection refused: max_connections reached");
            continue;
        };
        let service = make_service(ConnectionInfo {
            remote,
            local,
            tls: tls.is_some(),
            listener: index,
        });
        // Only where the listener defers accepts until data arrives (Linux):
        // elsewhere the first read would nearly always come too early.
        let session = if cfg!(target_os = "linux") && tls.is_none() && serving.fast_path {
            // tokio's accepted sockets are non-blocking.
            use std::io::{Read, Write};
            let socket = socket2::SockRef::from(&stream);
            let recv = |buf: &mut [u8]| (&*socket).read(buf);
            let send = |buf: &[u8]| (&*socket).write(buf);
            match connection::answer_now(recv, send, &service, &serving) {
                Some(session) => session,
                None => continue,
            }
        } else {
            Session::default()
        };
        let serving = serving.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let timer = TokioTimer::new();
            let tls = tls.as_deref();
            connection::serve(&serving, stream, tls, session, service, &shutdown, &timer).await;
            drop(guard);
        });
    }
}

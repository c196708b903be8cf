//! The same hyper hello server (fixed 58-byte bencoded body, one thread per
//! worker, SO_REUSEPORT listener each) on two io_uring runtimes, so they can
//! be loaded side by side with shoal-load.
//!
//! usage: uring-candidates monoio|compio ADDR WORKERS

use std::convert::Infallible;
use std::future::ready;
use std::net::{SocketAddr, TcpListener};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;

const BODY: &[u8] = b"d8:completei10e10:incompletei20e8:intervali1800e5:peers0:e";

fn listener(addr: SocketAddr) -> TcpListener {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(4096).unwrap();
    socket.into()
}

fn service() -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
> {
    service_fn(|_| ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))))
}

fn run_monoio(addr: SocketAddr) {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::from_std(listener(addr)).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            monoio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(monoio_compat::TcpStreamCompat::new(stream));
                let _ = http1::Builder::new()
                    .timer(monoio_compat::hyper::MonoioTimer)
                    .serve_connection(io, service())
                    .await;
            });
        }
    });
}

fn run_compio(addr: SocketAddr) {
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let std = listener(addr);
        std.set_nonblocking(true).unwrap();
        let listener = compio::net::TcpListener::from_std(std).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            compio::runtime::spawn(async move {
                let io = cyper_core::HyperStream::new_plain(stream);
                let _ = http1::Builder::new()
                    .timer(cyper_core::CompioTimer)
                    .serve_connection(io, service())
                    .await;
            })
            .detach();
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runtime = args.next().expect("monoio or compio");
    let addr: SocketAddr = args.next().expect("ADDR").parse().unwrap();
    let workers: usize = args.next().map_or(2, |w| w.parse().unwrap());
    // Bind once first so that port 0 resolves to one port for all workers.
    let addr = listener(addr).local_addr().unwrap();
    eprintln!("{runtime} on {addr}, {workers} workers");
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let runtime = runtime.clone();
            std::thread::spawn(move || match runtime.as_str() {
                "monoio" => run_monoio(addr),
                "compio" => run_compio(addr),
                other => panic!("unknown runtime {other}"),
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

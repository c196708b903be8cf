//! The ceiling: a hyper server that answers every request with one fixed
//! 58-byte bencoded announce response, run on any shoal reactor. Whatever
//! shoal does per announce costs throughput relative to this.
//!
//! `cargo run --release --example hello -- 127.0.0.1:7070 [REACTOR] [WORKERS] [fast-path]`

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::Response;

use shoal::http::driver::{Driver, DriverOptions, Handler, Reply, RequestHead};
use shoal::reactor::{Bound, Choice, Options};
use shoal::shutdown::{self, Shutdown};

const BODY: &[u8] = b"d8:completei10e10:incompletei20e8:intervali1800e5:peers0:e";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7070".into())
        .parse()?;
    let choice: Choice = args
        .next()
        .unwrap_or_else(|| "tokio".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    let workers = args.next().map_or(Ok(2), |w| w.parse())?;
    let options = Options {
        kind: choice.resolve().map_err(anyhow::Error::msg)?,
        workers,
        max_connections: 50_000,
        shutdown_grace: Duration::from_secs(1),
        udp_nap: Duration::ZERO,
    };
    let driver = DriverOptions {
        request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_request_bytes: 8192,
        tls: None,
        // "fast-path" as a fourth argument measures the driver's own fast
        // path; by default hyper alone.
        fast_path: args.next().as_deref() == Some("fast-path"),
    };
    let bound = Bound::bind(options, &[addr], &[])?;
    eprintln!(
        "hello listening on {} ({})",
        bound.local_addrs()[0],
        bound.options().describe()
    );
    let shutdown = Shutdown::new();
    shutdown::on_signals(shutdown.clone(), shutdown::Reload::new())?;
    bound.serve(Driver::new(&driver, |_| Hello), None, shutdown)?;
    Ok(())
}

/// Answers every request with the fixed body.
struct Hello;

impl Handler for Hello {
    fn handle(&self, _request: &RequestHead<'_>) -> Reply {
        let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(BODY))));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        Reply::Now(response)
    }
}

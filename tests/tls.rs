//! Black-box tests of HTTPS listeners (`--tls-listen`, `--tls-cert`,
//! `--tls-key`): announces over TLS with a self-signed certificate made
//! here, certificate reload on SIGHUP, and the failure cases.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Announce, Dict, TIMEOUT, Tracker, id, wait_until};
use rustls::pki_types::{CertificateDer, ServerName};

/// A fresh self-signed certificate for `localhost`, written as PEM files;
/// returns its DER form.
fn make_cert(dir: &Path) -> CertificateDer<'static> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    // Written beside and renamed, so a reload never sees half a file.
    for (name, text) in [
        ("cert.pem", made.cert.pem()),
        ("key.pem", made.signing_key.serialize_pem()),
    ] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
    made.cert.der().clone()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shoal-tls-{name}-{}-{}",
        std::process::id(),
        common::run_name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts shoal with an HTTPS listener using the certificate in `dir`, and
/// `extra` arguments; returns it and the HTTPS address.
fn start(dir: &Path, extra: &[&str]) -> (Tracker, SocketAddr) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut args = vec![
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let tracker = Tracker::start(&args);
    let https = tracker.logged_addr("listening on https://");
    (tracker, https)
}

/// GET `target` over TLS trusting only `trusted`; the response and the
/// certificate the server presented.
fn https_get(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    target: &str,
) -> Result<(common::HttpResponse, CertificateDer<'static>), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let io = |error: std::io::Error| match error.into_inner() {
        Some(inner) => match inner.downcast::<rustls::Error>() {
            Ok(tls) => *tls,
            Err(other) => rustls::Error::General(other.to_string()),
        },
        None => rustls::Error::General("i/o error".into()),
    };
    tls.write_all(request.as_bytes()).map_err(io)?;
    let mut bytes = Vec::new();
    match tls.read_to_end(&mut bytes) {
        Ok(_) => {}
        // The server closed without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !bytes.is_empty() => {}
        Err(e) => return Err(io(e)),
    }
    let presented = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    Ok((common::parse_response(&bytes), presented))
}

fn announces_work_over_https() {
    let dir = temp_dir("announce");
    let cert = make_cert(&dir);
    let (tracker, https) = start(&dir, &[]);
    let first = Announce::new(id(4), 1).seeder();
    let (response, presented) = https_get(https, &cert, &first.target()).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(presented, cert);
    let dict: Dict = response.dict();
    assert_eq!(dict.int("complete"), 1, "{dict:?}");
    // The same swarm over plain HTTP sees the HTTPS peer.
    let plain = tracker.announce(&Announce::new(id(4), 2));
    assert_eq!(plain.int("complete"), 1);
    assert_eq!(plain.peers4().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let dir = temp_dir("reload");
    let first = make_cert(&dir);
    let (mut tracker, https) = start(&dir, &[]);
    assert_eq!(https_get(https, &first, "/stats").unwrap().1, first);

    let second = make_cert(&dir);
    assert_ne!(first, second);
    tracker.signal("HUP");
    wait_until("the reload to be logged", || {
        tracker.log().contains("TLS certificate reloaded")
    });
    let (response, presented) = https_get(https, &second, "/stats").unwrap();
    assert_eq!((response.status, presented), (200, second.clone()));
    // A client that trusts only the old certificate is now refused.
    assert!(https_get(https, &first, "/stats").is_err());

    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    tracker.signal("HUP");
    wait_until("the failed reload to be logged", || {
        tracker
            .log()
            .contains("the previous certificate stays in force")
    });
    assert_eq!(https_get(https, &second, "/stats").unwrap().1, second);
    let _ = tracker.signal_and_wait("TERM");
    let _ = std::fs::remove_dir_all(&dir);
}

fn plain_http_and_silence_on_the_https_port_are_cut_off() {
    let dir = temp_dir("misuse");
    let cert = make_cert(&dir);
    let (_tracker, https) = start(&dir, &["--header-timeout", "1"]);
    // Plain HTTP is not a TLS handshake: the connection is closed.
    let answer = common::raw(https, b"GET /announce HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    // A client that never starts its handshake is dropped at the timeout.
    let mut silent = TcpStream::connect(https).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = loop {
        match silent.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?} ({read:?})"
    );
    // The server is unharmed.
    assert_eq!(https_get(https, &cert, "/stats").unwrap().0.status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

reactor_tests!(
    announces_work_over_https,
    sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old,
    plain_http_and_silence_on_the_https_port_are_cut_off,
);

/// Settings that cannot work stop the start with a message naming the fix.
#[test]
fn tls_settings_are_checked_at_start() {
    let shoal = env!("CARGO_BIN_EXE_shoal");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(shoal)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = run(&["--tls-listen", "127.0.0.1:0"]);
    assert!(
        error.contains("tls_listen needs both tls_cert and tls_key"),
        "{error}"
    );
    let error = run(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/x.pem"]);
    assert!(error.contains("used only with tls_listen"), "{error}");
    let error = run(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(
        error.contains("cannot read TLS certificate chain /nonexistent/cert.pem"),
        "{error}"
    );
}

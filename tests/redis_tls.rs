//! `rediss://`: shoal reaches a Redis and a Redis Cluster that speak TLS
//! only, as a self-hosted one does: certificates from a private authority
//! (`--redis-tls-ca-file`), and a client certificate, which Redis asks for
//! unless told not to (`--redis-tls-cert-file`, `--redis-tls-key-file`).
//! The servers are Debian's `redis-server` on loopback, their certificates
//! made here.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::redis::{available, die_with_parent, free_ports, wait_for};
use common::{Announce, Tracker, get, id};

const LOCALHOST4: [u8; 4] = [127, 0, 0, 1];
const UNAVAILABLE: &str = "tracker storage unavailable, try again later";

/// A private authority, the servers' certificate (127.0.0.1) and a
/// client's, as PEM files in a directory of their own.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!(
            "shoal-redis-tls-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "shoal test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("ca.crt", ca.pem());
        // The servers' certificate serves the cluster bus too, where each
        // node is the other's client: both uses.
        for (name, names, usages) in [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            (
                "client",
                vec!["shoal".to_owned()],
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
        ] {
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = usages;
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.crt"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The settings that trust the authority and show the client
    /// certificate.
    fn client_args(&self) -> Vec<String> {
        vec![
            "--redis-tls-ca-file".into(),
            self.file("ca.crt"),
            "--redis-tls-cert-file".into(),
            self.file("client.crt"),
            "--redis-tls-key-file".into(),
            self.file("client.key"),
        ]
    }

    /// `redis-cli` over TLS to `port`: its output, if it ran.
    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["--tls", "--cacert", &self.file("ca.crt")])
            .args(["--cert", &self.file("client.crt")])
            .args(["--key", &self.file("client.key")])
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A `redis-server` with TLS only on `port` (no plain port), stopped
    /// when dropped; `extra` for a cluster node's settings.
    fn server(&self, port: u16, extra: &[&str]) -> Server {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &self.file("server.crt")])
            .args(["--tls-key-file", &self.file("server.key")])
            .args(["--tls-ca-cert-file", &self.file("ca.crt")])
            .args(extra)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let child = command.spawn().expect("start redis-server");
        let server = Server(child);
        wait_for("redis over TLS", || {
            self.cli(port, &["PING"])
                .is_some_and(|r| r.contains("PONG"))
        });
        server
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node(url: &str, tls: &[String]) -> Tracker {
    let mut args = vec!["--store", "redis", "--redis-url", url];
    args.extend(["--redis-stats-interval", "1"]);
    args.extend(tls.iter().map(String::as_str));
    Tracker::start(&args)
}

#[test]
fn a_redis_with_a_private_authority_is_reached_with_its_files_and_not_without() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let port = free_ports(1)[0];
    let _server = pki.server(port, &[]);
    let url = format!("rediss://127.0.0.1:{port}");

    let tracker = node(&url, &pki.client_args());
    let hash = id(1);
    tracker.announce(&Announce::new(hash, 1).port(7001));
    let second = tracker.announce(&Announce::new(hash, 2).port(7002));
    assert_eq!(second.peers4(), vec![(LOCALHOST4, 7001)]);
    common::wait_until("the totals are gathered over TLS", || {
        let stats = get(tracker.v4, "/stats.json").text();
        stats.contains("\"backend\":\"redis\"") && stats.contains("\"torrents\":1")
    });

    // Each file matters: without the authority the server's certificate is
    // not trusted (the built-in public roots do not hold it); without the
    // client certificate Redis ends the handshake.
    let args = pki.client_args();
    for (without, args) in [
        ("the authority", args[2..].to_vec()),
        ("the client certificate", args[..2].to_vec()),
    ] {
        let tracker = node(&url, &args);
        let answer = tracker.announce(&Announce::new(hash, 3).port(7003));
        assert_eq!(
            answer.failure().as_deref(),
            Some(UNAVAILABLE),
            "without {without}"
        );
    }
}

#[test]
fn a_cluster_over_tls_serves_every_master_directly_and_gathers_totals() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let ports = free_ports(3);
    let cluster = [
        "--cluster-enabled",
        "yes",
        "--tls-cluster",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    ];
    let _servers: Vec<Server> = ports.iter().map(|&p| pki.server(p, &cluster)).collect();
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(nodes.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    assert!(
        pki.cli(ports[0], &create).is_some(),
        "redis-cli --cluster create over TLS"
    );
    for &port in &ports {
        wait_for("cluster_state:ok", || {
            pki.cli(port, &["CLUSTER", "INFO"])
                .is_some_and(|r| r.contains("cluster_state:ok"))
        });
    }

    let url = format!("rediss://127.0.0.1:{}", ports[0]);
    let first = node(&url, &pki.client_args());
    let second = node(&url, &pki.client_args());
    // Thirty swarms: every master holds some (all on one master has odds of
    // 3 * (1/3)^30).
    for n in 0..30u8 {
        let hash = id(100 + n);
        first.announce(&Announce::new(hash, 1).port(7001));
        let answer = second.announce(&Announce::new(hash, 2).port(7002));
        assert_eq!(answer.peers4(), vec![(LOCALHOST4, 7001)], "swarm {n}");
    }
    let masters_used = ports
        .iter()
        .filter(|&&p| {
            pki.cli(p, &["DBSIZE"])
                .and_then(|r| r.trim().parse::<u64>().ok())
                .is_some_and(|keys| keys > 0)
        })
        .count();
    assert_eq!(masters_used, 3, "every master holds swarms");
    // Straight to each swarm's master over TLS (the slot map's own
    // connections), not through the cluster client.
    let metrics = get(first.v4, "/metrics").text();
    let direct = metrics
        .lines()
        .find(|line| line.starts_with("shoal_store_routes_total") && line.contains("\"direct\""))
        .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(direct >= 30, "direct routes: {direct}\n{metrics}");
    // The totals are gathered from every master over TLS.
    common::wait_until("the totals are gathered over TLS", || {
        get(first.v4, "/stats.json")
            .text()
            .contains("\"torrents\":30")
    });
}

#[test]
fn tls_files_are_checked_at_start() {
    let pki = Pki::new();
    let (ca, cert) = (pki.file("ca.crt"), pki.file("client.crt"));
    let start = |url: &str, tls: &[&str]| {
        let mut args = vec!["--store", "redis", "--redis-url", url];
        args.extend(tls);
        Tracker::start_expecting_failure(&args)
    };
    let alone = start("rediss://127.0.0.1:1", &["--redis-tls-cert-file", &cert]);
    assert!(alone.contains("go together"), "{alone}");
    let plain = start("redis://127.0.0.1:1", &["--redis-tls-ca-file", &ca]);
    assert!(plain.contains("give rediss://HOST:PORT URLs"), "{plain}");
    let missing = pki.file("no-such.crt");
    let unread = start("rediss://127.0.0.1:1", &["--redis-tls-ca-file", &missing]);
    assert!(unread.contains("cannot read redis_tls_ca_file"), "{unread}");
    // Not a certificate: refused at start, not at the first announce.
    let garbage = pki.file("client.key");
    let bad = start(
        "rediss://:hunter2@127.0.0.1:1",
        &["--redis-tls-ca-file", &garbage],
    );
    assert!(bad.contains("holds no PEM certificate"), "{bad}");
    assert!(!bad.contains("hunter2"), "{bad}");
}

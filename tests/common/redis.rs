//! A Redis Cluster on loopback for the tests: three masters started from
//! Debian's `redis-server`, joined with `redis-cli --cluster create`, and
//! stopped (their files removed) when dropped. [`shared`] is one cluster per
//! test binary for the black-box suite's `redis` runs; tests that stop and
//! restart masters start their own with [`Cluster::start`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether `redis-server` and `redis-cli` can run here. Without them the
/// Redis tests are skipped with a note, except in CI where that fails.
pub fn available() -> bool {
    let found = ["redis-server", "redis-cli"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server and redis-cli are needed in CI (apt-get install redis-server)"
        );
        eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

/// A running cluster of loopback masters.
pub struct Cluster {
    dir: PathBuf,
    pub ports: Vec<u16>,
    servers: Vec<Option<Child>>,
}

impl Cluster {
    /// Starts `masters` masters (no replicas) and waits until the cluster
    /// serves every slot.
    pub fn start(masters: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "shoal-redis-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let ports = free_ports(masters);
        let mut cluster = Cluster {
            dir,
            ports: ports.clone(),
            servers: Vec::new(),
        };
        for i in 0..masters {
            let server = cluster.spawn(i);
            cluster.servers.push(Some(server));
        }
        for &port in &ports {
            wait_for(&format!("redis on {port}"), || ping(port));
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for &port in &ports {
            wait_for("cluster_state:ok", || cluster_ok(port));
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Child {
        let port = self.ports[i];
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node directory");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--appendonly", "yes", "--save", ""])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        command.spawn().expect("start redis-server")
    }

    /// A seed URL for `--redis-url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// Every master's URL.
    pub fn urls(&self) -> Vec<String> {
        let ports = self.ports.iter();
        ports.map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    /// Kills master `i` at once (as a crash would).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.servers[i].take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Freezes master `i` (SIGSTOP): its connections stay open and nothing
    /// answers, as with a hung server.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a master frozen by [`Cluster::pause`] run on (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let server = self.servers[i].as_ref().expect("a running master");
        let status = Command::new("kill")
            .args([signal, &server.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts master `i` again from its files and waits until the cluster
    /// is whole.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let server = self.spawn(i);
        self.servers[i] = Some(server);
        let port = self.ports[i];
        wait_for("restarted master", || ping(port));
        for &port in &self.ports {
            wait_for("cluster_state:ok after restart", || cluster_ok(port));
        }
    }

    /// The index of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = command(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot");
        let slots = command(self.ports[0], &["CLUSTER", "NODES"]);
        for line in slots.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("node port");
            for range in &fields[8..] {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                let (Ok(start), Ok(end)) = (start.parse::<u16>(), end.parse::<u16>()) else {
                    continue;
                };
                if (start..=end).contains(&slot) {
                    return self.ports.iter().position(|&p| p == port).expect("known");
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// Runs one command on master `i`; its reply as text.
    pub fn command(&self, i: usize, args: &[&str]) -> String {
        command(self.ports[i], args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One Redis server, not a cluster, stopped when dropped.
pub struct Single {
    server: Child,
    port: u16,
}

impl Single {
    pub fn start() -> Single {
        Self::start_with(&[])
    }

    /// A server started with extra arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> Single {
        let port = free_ports(1)[0];
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut command);
        let server = command.spawn().expect("start redis-server");
        wait_for("redis", || ping(port));
        Single { server, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command; its reply as text.
    #[allow(dead_code)] // not every test binary asks
    pub fn command(&self, args: &[&str]) -> String {
        command(self.port, args)
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The cluster the black-box suite's `redis` runs share, started on first
/// use by a thread that lives as long as the test binary: the servers are
/// started with the parent-death signal, which fires when the thread that
/// started them ends, so they go when the binary does.
pub fn shared() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cluster = Cluster::start(3);
            let _ = tx.send(cluster.url());
            loop {
                std::thread::park();
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("shared Redis cluster did not start")
    })
}

/// Has the child killed when the thread that started it ends.
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// `n` ports free for a server and for its cluster bus (port + 10000).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < n {
        let port = fastrand::u16(20_000..30_000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    ports
}

pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ping(port: u16) -> bool {
    // A server with a password answers NOAUTH: it is up all the same.
    try_command(port, &["PING"]).is_some_and(|r| r.contains("PONG") || r.contains("NOAUTH"))
}

fn cluster_ok(port: u16) -> bool {
    try_command(port, &["CLUSTER", "INFO"]).is_some_and(|r| r.contains("cluster_state:ok"))
}

fn command(port: u16, args: &[&str]) -> String {
    try_command(port, args).unwrap_or_else(|| panic!("redis {port}: {args:?} failed"))
}

/// One RESP command over a fresh connection; the reply's text (bulk
/// strings unwrapped, arrays flattened a line per item).
fn try_command(port: u16, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(text) = parse(&reply) {
            return Some(text);
        }
    }
    parse(&reply)
}

/// The text of a complete RESP reply, or `None` if more is to come.
fn parse(reply: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(reply);
    let (head, rest) = text.split_once("\r\n")?;
    match head.as_bytes().first()? {
        b'+' | b':' => Some(head[1..].to_owned()),
        b'-' => Some(head.to_owned()),
        b'$' => {
            let len: i64 = head[1..].parse().ok()?;
            if len < 0 {
                return Some(String::new());
            }
            let len = len as usize;
            (rest.len() >= len + 2).then(|| rest[..len].to_owned())
        }
        _ => Some(text.into_owned()),
    }
}

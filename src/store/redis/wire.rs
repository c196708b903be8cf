//! A plain-TCP connection of our own to one master of a cluster: the
//! commands of many requests pipelined on it, their replies (RESP2) read
//! back in order. It carries the announces sent straight to a master
//! ([`super::direct`]), the hot path of the Redis store.
//!
//! The client's multiplexed connection does the same through a sink, a
//! framed codec and a general parser: about a third of a node's user-space
//! instructions per announce. Here a request appends its bytes to one
//! buffer and its place to one queue, a writer task writes what gathered
//! in one call, and a reader task parses the replies (four kinds of values
//! and errors) and hands each request its own.
//!
//! It reconnects by itself, but never waits for that: while it is down, a
//! request fails at once (the caller takes the cluster client's way). TLS
//! connections stay with the client's connection manager.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use super::commands::{Commands, Packed};

/// Least time between two attempts to connect again.
const RETRY: Duration = Duration::from_millis(500);
/// Requests waiting for replies at most; past it (a master that stopped
/// answering while requests kept coming) the connection is dropped and made
/// again, rather than the queue growing without bound.
const MAX_PENDING: usize = 65_536;
/// Nesting of arrays a reply may have (ours have one level).
const MAX_DEPTH: usize = 8;
/// The largest bulk string or array accepted from the server.
const MAX_LEN: usize = 512 << 20;
/// The longest line (a value's kind and length, or a simple string).
const MAX_LINE: usize = 64 * 1024;

/// One master's connection; clones share it. When the last clone goes (the
/// slot map no longer names the master), the connection closes.
#[derive(Clone)]
pub(super) struct Wire(Arc<Handle>);

/// What the clones of a [`Wire`] share: its tasks hold the [`Inner`] only,
/// so that this drops with the last clone and stops them.
struct Handle(Arc<Inner>);

impl Drop for Handle {
    fn drop(&mut self) {
        let tasks = {
            let mut state = self.0.lock();
            state.closed = true;
            state.up = false;
            std::mem::take(&mut state.tasks)
        };
        for task in tasks {
            task.abort();
        }
    }
}

struct Inner {
    host: String,
    port: u16,
    /// `AUTH` arguments (user, password), sent first on every connection.
    auth: Option<(Option<String>, String)>,
    connect_timeout: Duration,
    state: Mutex<State>,
    /// Wakes the writer when `out` gets bytes.
    wake: Notify,
}

#[derive(Default)]
struct State {
    up: bool,
    /// Every handle is gone: no connection is made again.
    closed: bool,
    /// Counts the connections made: a task of an older one changes nothing.
    generation: u64,
    /// A connection attempt is under way.
    connecting: bool,
    last_attempt: Option<Instant>,
    /// Bytes of commands not yet written.
    out: Vec<u8>,
    /// The requests written or to be written, in order.
    pending: VecDeque<Pending>,
    /// The current connection's reader and writer tasks.
    tasks: Vec<AbortHandle>,
}

struct Pending {
    replies: usize,
    answer: oneshot::Sender<RedisResult<Vec<Value>>>,
}

impl Wire {
    /// Connects to `host:port` (with `auth`), within `connect_timeout`.
    pub async fn connect(
        host: String,
        port: u16,
        auth: Option<(Option<String>, String)>,
        connect_timeout: Duration,
    ) -> RedisResult<Wire> {
        let inner = Arc::new(Inner {
            host,
            port,
            auth,
            connect_timeout,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        let stream = inner.open().await?;
        inner.start(stream);
        Ok(Wire(Arc::new(Handle(inner))))
    }

    /// Sends `bytes` (`replies` commands) and waits for their replies.
    /// Fails at once while the connection is down (and has it made again
    /// in the background).
    pub async fn request(&self, bytes: &[u8], replies: usize) -> RedisResult<Vec<Value>> {
        if replies == 0 {
            return Ok(Vec::new());
        }
        self.send(&mut |out: &mut Vec<u8>| {
            out.extend_from_slice(bytes);
            replies
        })
        .await
    }

    /// Sends the commands `build` writes (straight into the buffer the
    /// writer takes them from) and waits for their replies.
    pub async fn commands(
        &self,
        build: &mut (dyn FnMut(&mut dyn Commands) + Send),
    ) -> RedisResult<Vec<Value>> {
        self.send(&mut |out: &mut Vec<u8>| {
            let mut packed = Packed {
                bytes: out,
                count: 0,
            };
            build(&mut packed);
            packed.count
        })
        .await
    }

    /// `write` appends commands to the writer's buffer and says how many.
    async fn send(
        &self,
        write: &mut (dyn FnMut(&mut Vec<u8>) -> usize + Send),
    ) -> RedisResult<Vec<Value>> {
        let (answer, reply) = oneshot::channel();
        let wake = {
            let inner = &self.0.0;
            let mut state = inner.lock();
            if !state.up {
                drop(state);
                inner.clone().reconnect();
                return Err(down());
            }
            if state.pending.len() >= MAX_PENDING {
                let generation = state.generation;
                drop(state);
                inner.fail(generation, "too many requests unanswered");
                return Err(down());
            }
            let wake = state.out.is_empty();
            let replies = write(&mut state.out);
            if replies == 0 {
                return Ok(Vec::new());
            }
            state.pending.push_back(Pending { replies, answer });
            wake
        };
        if wake {
            self.0.0.wake.notify_one();
        }
        reply.await.unwrap_or_else(|_| Err(down()))
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that a
        // later request could trip on: take the state as it is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a connection and authenticates it.
    async fn open(&self) -> RedisResult<TcpStream> {
        let addr = (self.host.as_str(), self.port);
        let opening = async {
            let mut stream = TcpStream::connect(addr).await?;
            if let Some((user, password)) = &self.auth {
                let mut auth = redis::cmd("AUTH");
                if let Some(user) = user {
                    auth.arg(user);
                }
                auth.arg(password);
                stream.write_all(&auth.get_packed_command()).await?;
                let mut buf = BytesMut::with_capacity(256);
                let reply = loop {
                    if let Some(value) = parse(&mut buf)? {
                        break value;
                    }
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(down());
                    }
                };
                if let Value::ServerError(error) = reply {
                    return Err(error.into());
                }
            }
            Ok::<_, RedisError>(stream)
        };
        match tokio::time::timeout(self.connect_timeout, opening).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into()),
        }
    }

    /// Serves a new connection: its reader and writer tasks.
    fn start(self: &Arc<Self>, stream: TcpStream) {
        let (read, write) = stream.into_split();
        let mut state = self.lock();
        if state.closed {
            // Made after the last handle went: closed here.
            state.connecting = false;
            return;
        }
        state.generation += 1;
        let generation = state.generation;
        let reader = tokio::spawn(self.clone().read(read, generation));
        let writer = tokio::spawn(self.clone().write(write, generation));
        state.up = true;
        state.connecting = false;
        state.tasks = vec![reader.abort_handle(), writer.abort_handle()];
    }

    /// Makes the connection again in the background, unless it is being
    /// made or was tried less than [`RETRY`] ago.
    fn reconnect(self: Arc<Self>) {
        {
            let mut state = self.lock();
            let recent = state.last_attempt.is_some_and(|at| at.elapsed() < RETRY);
            if state.up || state.connecting || state.closed || recent {
                return;
            }
            state.connecting = true;
            state.last_attempt = Some(Instant::now());
        }
        tokio::spawn(async move {
            match self.open().await {
                Ok(stream) => self.start(stream),
                Err(error) => {
                    tracing::debug!(%error, host = %self.host, port = self.port, "master still unreachable");
                    self.lock().connecting = false;
                }
            }
        });
    }

    /// The connection is lost: every request waiting on it fails, and the
    /// next one has it made again.
    fn fail(&self, generation: u64, why: &str) {
        let (pending, tasks) = {
            let mut state = self.lock();
            if !state.up || state.generation != generation {
                return;
            }
            state.up = false;
            state.out.clear();
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.tasks),
            )
        };
        tracing::debug!(host = %self.host, port = self.port, why, "connection to a master lost");
        for request in pending {
            let _ = request.answer.send(Err(down()));
        }
        for task in tasks {
            task.abort();
        }
    }

    /// Writes what the requests gathered, one write for all that came
    /// since the last.
    async fn write(self: Arc<Self>, mut stream: OwnedWriteHalf, generation: u64) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            std::mem::swap(&mut batch, &mut self.lock().out);
            if batch.is_empty() {
                continue;
            }
            if let Err(error) = stream.write_all(&batch).await {
                return self.fail(generation, &error.to_string());
            }
            batch.clear();
        }
    }

    /// Reads the replies and answers each request with its own, in order.
    async fn read(self: Arc<Self>, mut stream: OwnedReadHalf, generation: u64) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut values = Vec::new();
        loop {
            match stream.read_buf(&mut buf).await {
                Ok(0) => return self.fail(generation, "closed by the server"),
                Ok(_) => {}
                Err(error) => return self.fail(generation, &error.to_string()),
            }
            loop {
                let value = match parse(&mut buf) {
                    Ok(Some(value)) => value,
                    Ok(None) => break,
                    Err(error) => return self.fail(generation, &error.to_string()),
                };
                values.push(value);
                let mut state = self.lock();
                let Some(first) = state.pending.front() else {
                    drop(state);
                    return self.fail(generation, "a reply nobody asked for");
                };
                if values.len() < first.replies {
                    continue;
                }
                let Some(request) = state.pending.pop_front() else {
                    continue;
                };
                drop(state);
                // Gone when its deadline passed: its replies are read anyway.
                let _ = request.answer.send(Ok(std::mem::take(&mut values)));
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
        }
    }
}

fn down() -> RedisError {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection to the master is down",
    )
    .into()
}

fn malformed(what: &'static str) -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::InvalidData, what))
}

/// One whole value from the front of `buf`, taken off it; `None` while
/// it has not all arrived.
fn parse(buf: &mut BytesMut) -> RedisResult<Option<Value>> {
    match value(buf, 0)? {
        Some((value, used)) => {
            buf.advance(used);
            Ok(Some(value))
        }
        None => Ok(None),
    }
}

/// The value at the start of `bytes` and its length, if all there.
fn value(bytes: &[u8], depth: usize) -> RedisResult<Option<(Value, usize)>> {
    let head = &bytes[..bytes.len().min(MAX_LINE)];
    let Some(end) = head.windows(2).position(|w| w == b"\r\n") else {
        if head.len() == MAX_LINE {
            return Err(malformed("reply line too long"));
        }
        return Ok(None);
    };
    let Some((&kind, line)) = bytes[..end].split_first() else {
        return Err(malformed("empty reply line"));
    };
    let after = end + 2;
    match kind {
        b'$' => {
            let Some(len) = length(line)? else {
                return Ok(Some((Value::Nil, after)));
            };
            let Some(body) = bytes.get(after..after + len + 2) else {
                return Ok(None);
            };
            if &body[len..] != b"\r\n" {
                return Err(malformed("bulk string without its end"));
            }
            Ok(Some((
                Value::BulkString(body[..len].to_vec()),
                after + len + 2,
            )))
        }
        b'*' => {
            let Some(count) = length(line)? else {
                return Ok(Some((Value::Nil, after)));
            };
            if depth >= MAX_DEPTH {
                return Err(malformed("arrays nested too deep"));
            }
            // Never more room than the bytes at hand could fill (each
            // value takes at least 3 bytes).
            let mut items = Vec::with_capacity(count.min(bytes.len() / 3));
            let mut at = after;
            for _ in 0..count {
                let Some((item, used)) = value(&bytes[at..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            Ok(Some((Value::Array(items), at)))
        }
        b':' => {
            let text = std::str::from_utf8(line).map_err(|_| malformed("integer"))?;
            let n = text.parse().map_err(|_| malformed("integer"))?;
            Ok(Some((Value::Int(n), after)))
        }
        b'+' if line == b"OK" => Ok(Some((Value::Okay, after))),
        b'+' => {
            let text = String::from_utf8_lossy(line).into_owned();
            Ok(Some((Value::SimpleString(text), after)))
        }
        // Errors are rare: the client's own parser gives them their kind
        // (MOVED, ASK, NOSCRIPT, ...).
        b'-' => redis::parse_redis_value(&bytes[..after]).map(|error| Some((error, after))),
        _ => Err(malformed(
            "a reply of a kind this connection does not speak",
        )),
    }
}

/// The length of a bulk string or array: `None` for -1 (nil).
fn length(line: &[u8]) -> RedisResult<Option<usize>> {
    if line == b"-1" {
        return Ok(None);
    }
    let text = std::str::from_utf8(line).map_err(|_| malformed("length"))?;
    match text.parse::<usize>() {
        Ok(len) if len <= MAX_LEN => Ok(Some(len)),
        _ => Err(malformed("length")),
    }
}

impl ConnectionLike for Wire {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut replies = self.request(&cmd.get_packed_command(), 1).await?;
            replies.pop().ok_or_else(|| malformed("no reply"))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let bytes = pipeline.get_packed_pipeline();
            let mut replies = self.request(&bytes, offset + count).await?;
            Ok(replies.split_off(offset.min(replies.len())))
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Value> {
        let mut buf = BytesMut::from(bytes);
        let mut values = Vec::new();
        while let Some(value) = parse(&mut buf).unwrap() {
            values.push(value);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        values
    }

    #[test]
    fn replies_are_read_whole_and_in_order() {
        let reply = b"$3\r\nab\n\r\n*3\r\n$-1\r\n:-7\r\n*1\r\n$0\r\n\r\n+OK\r\n+PONG\r\n*-1\r\n";
        assert_eq!(
            all(reply),
            vec![
                Value::BulkString(b"ab\n".to_vec()),
                Value::Array(vec![
                    Value::Nil,
                    Value::Int(-7),
                    Value::Array(vec![Value::BulkString(Vec::new())]),
                ]),
                Value::Okay,
                Value::SimpleString("PONG".into()),
                Value::Nil,
            ]
        );
    }

    #[test]
    fn a_value_cut_anywhere_waits_for_the_rest() {
        let reply: &[u8] = b"*2\r\n$5\r\nhello\r\n:42\r\n";
        for cut in 0..reply.len() {
            let mut buf = BytesMut::from(&reply[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing taken at {cut}");
            buf.extend_from_slice(&reply[cut..]);
            let value = parse(&mut buf).unwrap();
            assert_eq!(
                value,
                Some(Value::Array(vec![
                    Value::BulkString(b"hello".to_vec()),
                    Value::Int(42)
                ]))
            );
        }
    }

    #[test]
    fn errors_keep_their_kind() {
        let values = all(b"-NOSCRIPT No matching script.\r\n-MOVED 3999 127.0.0.1:6381\r\n");
        let kinds: Vec<_> = values
            .into_iter()
            .map(|value| match value {
                Value::ServerError(error) => error.kind(),
                other => panic!("not an error: {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                Some(redis::ServerErrorKind::NoScript),
                Some(redis::ServerErrorKind::Moved)
            ]
        );
    }

    /// A fake master on loopback: serves each connection with `serve`,
    /// given the connection's index and the commands it read so far.
    async fn fake_master(
        serve: impl Fn(usize, &[Value]) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serve = Arc::new(serve);
        tokio::spawn(async move {
            for index in 0.. {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let serve = serve.clone();
                tokio::spawn(async move {
                    let (mut buf, mut commands) = (BytesMut::new(), Vec::new());
                    while stream.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                        while let Some(command) = parse(&mut buf).unwrap() {
                            commands.push(command);
                        }
                        match serve(index, &commands) {
                            Some(reply) => stream.write_all(&reply).await.unwrap(),
                            // Hang up.
                            None => return,
                        }
                    }
                });
            }
        });
        port
    }

    fn ints(values: &[Value]) -> Vec<i64> {
        let int = |value: &Value| match value {
            Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        };
        values.iter().map(int).collect()
    }

    #[tokio::test]
    async fn each_request_gets_its_own_replies_even_after_one_gave_up() {
        // Answers nothing until four commands came, then all four at once.
        let port = fake_master(|_, commands| {
            Some(if commands.len() == 4 {
                b":1\r\n:2\r\n:3\r\n:4\r\n".to_vec()
            } else {
                Vec::new()
            })
        })
        .await;
        let wire = Wire::connect("127.0.0.1".into(), port, None, Duration::from_secs(2))
            .await
            .unwrap();
        let ping = redis::cmd("PING").get_packed_command();
        let two = [ping.clone(), ping.clone()].concat();
        let first = tokio::spawn({
            let wire = wire.clone();
            async move { wire.request(&two, 2).await }
        });
        tokio::task::yield_now().await;
        // A request that gives up (its deadline) once it is sent.
        tokio::select! {
            biased;
            _ = wire.request(&ping, 1) => panic!("answered too early"),
            () = std::future::ready(()) => {}
        }
        let last = wire.request(&ping, 1).await.unwrap();
        assert_eq!(ints(&first.await.unwrap().unwrap()), vec![1, 2]);
        assert_eq!(ints(&last), vec![4]);
    }

    #[tokio::test]
    async fn a_lost_connection_fails_its_requests_and_is_made_again() {
        // The first connection hangs up on its first command; later ones
        // answer.
        let port = fake_master(|index, _| (index > 0).then(|| b":7\r\n".to_vec())).await;
        let wire = Wire::connect("127.0.0.1".into(), port, None, Duration::from_secs(2))
            .await
            .unwrap();
        let ping = redis::cmd("PING").get_packed_command();
        assert!(wire.request(&ping, 1).await.is_err());
        // Down meanwhile: fails at once, and has it made again.
        let started = Instant::now();
        let answer = loop {
            match wire.request(&ping, 1).await {
                Ok(answer) => break answer,
                Err(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(5),
                        "never came back"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(ints(&answer), vec![7]);
    }

    #[tokio::test]
    async fn it_authenticates_first_and_a_refused_password_is_an_error() {
        let port = fake_master(|_, commands| {
            let auth = Value::Array(
                ["AUTH", "shoal", "secret"]
                    .map(|arg| Value::BulkString(arg.as_bytes().to_vec()))
                    .to_vec(),
            );
            Some(match commands.len() {
                1 if commands[0] == auth => b"+OK\r\n".to_vec(),
                1 => b"-WRONGPASS invalid username-password pair\r\n".to_vec(),
                _ => b":1\r\n".to_vec(),
            })
        })
        .await;
        let timeout = Duration::from_secs(2);
        let auth = |password: &str| Some((Some("shoal".to_owned()), password.to_owned()));
        let refused = Wire::connect("127.0.0.1".into(), port, auth("guess"), timeout).await;
        assert!(refused.is_err());
        let wire = Wire::connect("127.0.0.1".into(), port, auth("secret"), timeout)
            .await
            .unwrap();
        let ping = redis::cmd("PING").get_packed_command();
        assert_eq!(ints(&wire.request(&ping, 1).await.unwrap()), vec![1]);
    }

    #[tokio::test]
    async fn the_connection_closes_with_its_last_handle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let timeout = Duration::from_secs(2);
        let (wire, accepted) = tokio::join!(
            Wire::connect("127.0.0.1".into(), port, None, timeout),
            listener.accept()
        );
        let (wire, (mut server, _)) = (wire.unwrap(), accepted.unwrap());
        let clone = wire.clone();
        drop(wire);
        let mut byte = [0u8; 1];
        // A clone left: still open.
        let read = tokio::time::timeout(Duration::from_millis(200), server.read(&mut byte)).await;
        assert!(read.is_err(), "closed while a clone was left");
        drop(clone);
        let read = tokio::time::timeout(timeout, server.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0))), "still open: {read:?}");
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            &b"?what\r\n"[..],
            b"\r\n",
            b"$x\r\n",
            b"$-2\r\n",
            b"$3\r\nabcde",
            b":1.5\r\n",
            b"*99999999999999999999\r\n",
            b"$999999999999\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(parse(&mut buf).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(&mut BytesMut::from(deep.as_bytes())).is_err());
        let fine = "*1\r\n".repeat(MAX_DEPTH) + ":1\r\n";
        assert!(
            parse(&mut BytesMut::from(fine.as_bytes()))
                .unwrap()
                .is_some()
        );
    }
}

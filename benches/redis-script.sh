#!/usr/bin/env bash
# The announce script alone, on one Redis server (no cluster, no tracker):
# EVALSHA on one swarm of 200 IPv6 peers, first as a peer refreshing itself,
# then as a new peer each call (numwant 50: the script also returns the
# windows of records the peers are chosen from), then the same two with
# numwant 0 and a plain GETRANGE of one window: what a node that plans the
# window reads itself sends. Redis's own commandstats say how many
# microseconds of Redis time a call took, and /proc how much of Redis's CPU.
# The script takes one packed binary argument (see the head of
# src/store/redis/announce.lua), so the calls are sent by a small Python
# client (16 connections, 8 calls pipelined on each), not redis-benchmark.
# usage: benches/redis-script.sh [CALLS]   (SHOW=1: every command's stats too)
# needs: redis-server (apt-get install redis-server), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-100000}
port=${PORT:-17300}
script=${SCRIPT:-src/store/redis/announce.lua}
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --loglevel warning >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
python3 - "$port" "$script" "$calls" "$server" "${SHOW:-}" <<'PY'
import hashlib, os, random, socket, struct, subprocess, sys, time

sys.path.insert(0, "benches")
from resp import encode, read_reply

port, script, calls, pid, show = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
# The keys the node passes: the swarm's index alone (the script names the
# others from it); KEY_COUNT=6 for scripts before 2026-12-06, which took all
# six (5 for those before the snatch count's copy).
KEYS = [b"m", b"4s", b"4l", b"6s", b"6l", b"d"][:int(os.environ.get("KEY_COUNT", "1"))]
NOW = int(time.time())

def packed(ip, numwant, seeder=False, rnd=0):
    """The script's argument, as the node packs it: flags ("0" plus 2 for
    IPv6 and 4 for a seeder), numwant, TTL, most peers, now, random, port,
    peer id, IP."""
    peer_id = (b"peer" + ip)[:20]
    return (bytes([48 + 2 + (4 if seeder else 0)])
            + struct.pack(">IIIII", numwant, 2700, 0, NOW, rnd) + b"pp" + peer_id + ip)

conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
files = [c.makefile("rb") for c in conns]
def send(sock, f, commands):
    sock.sendall(b"".join(commands))
    for _ in commands:
        read_reply(f)

src = open(script, "rb").read()
send(conns[0], files[0], [encode("SCRIPT", "LOAD", src)])
sha = hashlib.sha1(src).hexdigest()
for i in range(200):
    ip = b"ipipipipipip%04d" % (1000 + i)
    send(conns[0], files[0], [encode("EVALSHA", sha, len(KEYS), *KEYS, packed(ip, 50, i % 4 == 0, i))])

def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100

def run(label, command, make):
    subprocess.run(["redis-cli", "-p", str(port), "config", "resetstat"], capture_output=True)
    before, began = cpu(), time.time()
    done = 0
    while done < calls:
        for sock, f in zip(conns, files):
            batch = [make() for _ in range(8)]
            send(sock, f, batch)
            done += len(batch)
    elapsed, used = time.time() - began, cpu() - before
    stats = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"],
                           capture_output=True, text=True).stdout
    if show:
        print(stats, file=sys.stderr)
    usec = next(l.split("usec_per_call=")[1].split(",")[0] for l in stats.splitlines()
                if l.startswith(f"cmdstat_{command}:"))
    print(f"| {label} | {usec} | {used * 1e6 / done:.1f} | {done / elapsed:.0f} |")

me = b"ipipipipipip1150"
print("| call | Redis µs per call (commandstats) | Redis CPU µs per call | calls/s |")
print("|---|---:|---:|---:|")
run("a peer refreshes itself", "evalsha",
    lambda: encode("EVALSHA", sha, len(KEYS), *KEYS, packed(me, 50, rnd=random.getrandbits(32))))
run("a new peer (random IP)", "evalsha",
    lambda: encode("EVALSHA", sha, len(KEYS), *KEYS, packed(random.randbytes(16), 50, rnd=7)))
# What a node that knows the swarm's counts sends: the script with numwant 0,
# then plain GETRANGEs of the windows (53 records: 50 wanted and 3 spare).
run("a peer refreshes itself, numwant 0", "evalsha",
    lambda: encode("EVALSHA", sha, len(KEYS), *KEYS, packed(me, 0, rnd=random.getrandbits(32))))
run("a new peer (random IP), numwant 0", "evalsha",
    lambda: encode("EVALSHA", sha, len(KEYS), *KEYS, packed(random.randbytes(16), 0)))
run("a window of 53 IPv6 records (GETRANGE)", "getrange",
    lambda: encode("GETRANGE", "6l", 430, 2708))
PY

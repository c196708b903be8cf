#!/usr/bin/env bash
# Instructions Redis runs per call of the announce script, counted by
# callgrind: a figure that does not move with the machine's noise (Redis
# CPU time per announce moves by 10-15% between runs here), for comparing
# two versions of the script.
# One redis-server (no cluster) runs under valgrind; a small Python client
# sends the script as the node does (EVALSHA, the swarm's index as the one
# key, the packed announce, numwant 0), 16 calls pipelined a write:
#   new:     every call a new IPv4 peer at an address of its own, in one of
#            SWARMS swarms picked at random (the same sequence every run):
#            the swarms grow to CALLS / SWARMS peers;
#   refresh: the same calls again after a first pass that made the peers:
#            each a peer refreshing itself.
# Only the calls are counted (callgrind's counters are zeroed before and
# dumped after), so the figure includes Redis's reading, parsing and
# answering of them, not the start or the first pass.
# usage: benches/redis-instructions.sh [SCRIPT] [CALLS]
#   e.g. benches/redis-instructions.sh
#        benches/redis-instructions.sh /tmp/old-announce.lua 28000
#        MODES=new SWARMS=1000 KEY_COUNT=6 benches/redis-instructions.sh old.lua
#   KEY_COUNT=6: pass all six keys (scripts before 2026-12-06, session 11).
#   CLUSTER=1: the server in cluster mode (one master, every slot).
# needs: redis-server, valgrind, python3; about a minute a mode.
set -euo pipefail
cd "$(dirname "$0")/.."
script=${1:-src/store/redis/announce.lua}
calls=${2:-28000}
port=${PORT:-17310}
script=$(realpath "$script")
export BENCHES=$PWD/benches
for mode in ${MODES:-new refresh}; do
    out=$(mktemp -d)
    (
        cd "$out"
        cluster=()
        [ -n "${CLUSTER:-}" ] && cluster=(--cluster-enabled yes --cluster-config-file nodes.conf)
        valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" redis-server \
            --port "$port" --bind 127.0.0.1 --save "" --appendonly no "${cluster[@]}" \
            >/dev/null 2>&1 &
        server=$!
        trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
        until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.2; done
        if [ -n "${CLUSTER:-}" ]; then
            # A one-master cluster holding every slot: the slot checks of
            # cluster mode are counted too.
            redis-cli -p "$port" cluster addslotsrange 0 16383 >/dev/null
            until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
        fi
        python3 - "$port" "$calls" "$script" "$server" "$mode" "$out" <<'PY'
import glob, hashlib, os, random, socket, struct, subprocess, sys, time

sys.path.insert(0, os.environ["BENCHES"])
from resp import encode, read_reply

port, calls, path, server, mode, out = sys.argv[1:7]
port, calls = int(port), int(calls)
swarms = int(os.environ.get("SWARMS", "1000"))
key_count = int(os.environ.get("KEY_COUNT", "1"))
now = int(time.time())

sock = socket.create_connection(("127.0.0.1", port))
f = sock.makefile("rb")
def send(commands):
    sock.sendall(b"".join(commands))
    return [read_reply(f) for _ in commands]

def packed(ip):
    # Flags "0" (an IPv4 leecher), numwant 0, TTL, no cap, now, random,
    # port, peer id, IP: the layout at the head of announce.lua.
    peer_id = (b"-XX0001-" + ip.hex().encode() + b"x" * 20)[:20]
    return b"0" + struct.pack(">IIIII", 0, 2700, 0, now, 0) + b"pp" + peer_id + ip

source = open(path, "rb").read()
sha = hashlib.sha1(source).hexdigest().encode()
send([encode(b"SCRIPT", b"LOAD", source)])
random.seed(1)
suffixes = [b"m", b"4s", b"4l", b"6s", b"6l", b"d"][:key_count]
commands = []
for _ in range(calls):
    tag = b"{%08x}%032x" % (0, random.randrange(swarms))
    keys = [tag + s for s in suffixes]
    commands.append(encode(b"EVALSHA", sha, str(len(keys)).encode(), *keys,
                           packed(random.randbytes(4))))
if mode == "refresh":
    for i in range(0, calls, 16):
        send(commands[i:i + 16])

def dump():
    # Zeroes the counters too; the newest dump file holds what ran since.
    subprocess.run(["callgrind_control", "-d", server], capture_output=True)
    time.sleep(0.5)
    newest = max(glob.glob(out + "/cg.out*"), key=os.path.getmtime)
    for line in open(newest):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError("no totals in " + newest)

dump()
for i in range(0, calls, 16):
    send(commands[i:i + 16])
print(f"{mode:8s} {os.path.basename(path)}: {dump() / calls:,.0f} instructions per call "
      f"({calls} calls, {swarms} swarms)")
PY
    )
    rm -rf "$out"
done

#!/usr/bin/env bash
# Resident memory per peer of the running tracker, as an operator sees it:
# start the binary, fill it over HTTP with PEERS new peers spread evenly over
# TORRENTS torrents (each peer from its own IPv4 address, a quarter seeders:
# shoal-load --fill), then divide the growth of its resident set (VmRSS) by
# the peers it reports holding. Rows run one after another, each against a
# fresh process, beside Debian's opentracker under the same load.
#
# usage: benches/memory.sh [PEERS:TORRENTS ...]
#   e.g. benches/memory.sh 1000000:10000 1000000:100000 1000000:1000000
#        SERVERS="shoal shoal-compact" benches/memory.sh 10000000:10000
# SERVERS picks the columns (default: shoal shoal-compact opentracker);
# WORKERS the tracker's workers (2); REACTOR its reactor (its default);
# BIN another shoal binary to measure (default target/release/shoal).
# Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a rows <<< "${*:-1000000:10000 1000000:100000 1000000:1000000}"
read -r -a servers <<< "${SERVERS:-shoal shoal-compact opentracker}"
workers=${WORKERS:-2}

cargo build --release --bins >&2
load=target/release/shoal-load
bin=${BIN:-target/release/shoal}
work=$(mktemp -d)
chmod 755 "$work" # opentracker drops root privileges before reading its whitelist
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18190

rss() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $port" >&2
    return 1
}

# The peers shoal reports holding (opentracker: the fill's count).
shoal_peers() {
    local reply
    reply=$(exec 3<>"/dev/tcp/127.0.0.1/$port"; printf 'GET /stats.json HTTP/1.0\r\n\r\n' >&3; cat <&3)
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["peers"]["total"])' "${reply#*$'\r\n\r\n'}"
}

start() {
    local server=$1 torrents=$2
    case $server in
    shoal | shoal-compact)
        local extra=()
        [ "$server" = shoal-compact ] && extra=(--compact-only)
        [ -n "${REACTOR:-}" ] && extra+=(--reactor "$REACTOR")
        "$bin" --listen "127.0.0.1:$port" --udp-listen none --workers "$workers" \
            --log-level warn --allow-ip-param --peer-ttl 86400 "${extra[@]}" >/dev/null 2>&1 &
        ;;
    opentracker)
        "$load" -t 127.0.0.1:1 --torrents "$torrents" --print-hashes > "$work/whitelist.txt"
        printf 'listen.tcp 127.0.0.1:%s\naccess.whitelist %s\n' "$port" "$work/whitelist.txt" > "$work/ot.conf"
        opentracker -f "$work/ot.conf" >/dev/null 2>&1 &
        ;;
    esac
    pid=$!
    wait_port
}

printf '| server | peers | torrents | peers held | RSS before | RSS after | per peer | per torrent (1 peer each) | fill s |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for row in "${rows[@]}"; do
    peers=${row%%:*} torrents=${row##*:}
    for server in "${servers[@]}"; do
        start "$server" "$torrents"
        sleep 0.5
        # Warm-up: the fill's connections, buffers and thread heaps, so that
        # "before" holds everything but the peers (its 1,000 peers are
        # announced again by the fill, not added).
        "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill 1000 --json > /dev/null
        sleep 0.5
        before=$(rss "$pid")
        began=$(date +%s.%N)
        "$load" -t "127.0.0.1:$port" -c 16 --torrents "$torrents" --fill "$peers" --json > "$work/fill.json"
        took=$(python3 -c "import time; print(f'{time.time() - $began:.0f}')")
        sleep "${SETTLE:-3}"
        after=$(rss "$pid")
        if [ "$server" = opentracker ]; then
            held=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["announces"])' "$work/fill.json")
        else
            held=$(shoal_peers)
        fi
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        python3 - "$server" "$peers" "$torrents" "$held" "$before" "$after" "$took" <<'PY'
import sys
server, peers, torrents, held, before, after, took = sys.argv[1:]
peers, torrents, held, before, after = map(int, (peers, torrents, held, before, after))
growth = after - before
# The warm-up's 1,000 peers were there before.
per_peer = growth / (held - 1000) if held > 1000 else float("nan")
per_torrent = f"{growth / torrents:.0f} B" if peers == torrents else "-"
mib = lambda b: f"{b / 2**20:.1f} MiB"
print(f"| {server} | {peers:,} | {torrents:,} | {held:,} | {mib(before)} | {mib(after)} | {per_peer:.1f} B | {per_torrent} | {took} |")
PY
    done
done

#!/usr/bin/env bash
# The Redis store on a local 3-master Redis Cluster, beside the memory store,
# all in one run on loopback:
#   1. keep-alive announces against shoal --store memory, then --store redis
#      (one node), then two redis nodes sharing the cluster (load split over
#      both): responses per second and per shoal CPU-second, and for redis the
#      Redis CPU-seconds the run cost (all three masters, from /proc), hence
#      announces per Redis CPU-second;
#   2. latency at half the redis node's saturating rate, memory and redis
#      side by side: the p50/p99 Redis adds;
#   3. Redis memory per peer: TORRENTS swarms filled with PEERS_PER peers
#      each from distinct addresses, used_memory (all masters) before and
#      after, divided by the peers the cluster then holds.
# Every announce comes from its own address (shoal-load --distinct-ips, with
# --allow-ip-param on the tracker), as on the internet. By default every
# announce is a new peer (the dearest path); PEERS=N makes the runs of 1.
# and 2. a population of N peers that re-announce (shoal-load --peers: about
# 7% new peers), with WARMUP seconds (default 1, set it long enough to
# announce the N once) not counted, by shoal-load nor in Redis's CPU.
#
# usage: benches/redis.sh [SECONDS] [CONNECTIONS]
#   e.g. benches/redis.sh 10 64;  ROUNDS=3 benches/redis.sh 8 64
#        PEERS=100000 WARMUP=6 ROUNDS=3 benches/redis.sh 8 64
#   BASELINE=/path/to/older/shoal adds a "redis, baseline" row to every round,
#   run right after "redis": an A/B of a store change in one run.
# needs: redis-server (apt-get install redis-server); traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-64}
rounds=${ROUNDS:-1}
workers=${WORKERS:-1}
reactor=${REACTOR:-tokio}
torrents=${TORRENTS:-10000}
fill_torrents=${FILL_TORRENTS:-10000}
peers_per=${PEERS_PER:-20}
warmup=${WARMUP:-1}
mix=()
[ -n "${PEERS:-}" ] && mix=(--peers "$PEERS")

cargo build --release --bins >&2
load=target/release/shoal-load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ports=(17100 17101 17102)

for port in "${ports[@]}"; do
    mkdir -p "$work/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --cluster-require-full-coverage no --save "" --appendonly no \
        --dir "$work/$port" --daemonize no --loglevel warning >/dev/null 2>&1 &
done
for port in "${ports[@]}"; do
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
done
redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
for port in "${ports[@]}"; do
    until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done
redis_pids=$(for port in "${ports[@]}"; do pgrep -f "redis-server 127.0.0.1:$port"; done)

# CPU seconds (user + system) of the Redis servers so far.
redis_cpu() {
    local total=0 pid
    for pid in $redis_pids; do
        total=$(awk -v t="$total" '{ print t + ($14 + $15) / 100 }' "/proc/$pid/stat")
    done
    echo "$total"
}
redis_memory() {
    local total=0 port
    for port in "${ports[@]}"; do
        total=$(( total + $(redis-cli -p "$port" info memory | awk -F: '/^used_memory:/ { print $2+0 }') ))
    done
    echo "$total"
}
flush() {
    for port in "${ports[@]}"; do
        redis-cli -p "$port" flushall >/dev/null
        redis-cli -p "$port" config resetstat >/dev/null
    done
}
# Microseconds Redis spent inside commands since the last flush (all masters,
# from INFO commandstats): the rest of its CPU is sockets and the event loop.
redis_command_usec() {
    local total=0 port
    for port in "${ports[@]}"; do
        total=$(( total + $(redis-cli -p "$port" info commandstats \
            | sed -n 's/.*,usec=\([0-9]*\),.*/\1/p' | paste -sd+ | bc) ))
    done
    echo "$total"
}

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# node PORT STORE: start a shoal node, print its PID.
node() {
    local port=$1 store=$2
    local args=(--listen "127.0.0.1:$port" --udp-listen none --reactor "$reactor"
        --workers "$workers" --log-level warn --allow-ip-param --store "$store")
    [ "$store" = redis ] && args+=(--redis-url "redis://127.0.0.1:${ports[0]}")
    "${bin:-target/release/shoal}" "${args[@]}" >/dev/null 2>&1 &
    echo $!
}
stop() { kill -INT "$@" 2>/dev/null || true; wait "$@" 2>/dev/null || true; }

# others_cpu PID...: CPU seconds (utime + stime) the given processes used so far.
others_cpu() {
    local total=0 pid
    for pid in "$@"; do
        total=$(awk -v t="$total" '{ print t + ($14 + $15) / 100 }' "/proc/$pid/stat")
    done
    echo "$total"
}

# measure LABEL STORE NODES [LOAD ARGS...]: one run, a JSON line in results.
measure() {
    local label=$1 store=$2 nodes=$3
    shift 3
    flush
    local pids=() targets=() port
    for i in $(seq 1 "$nodes"); do
        port=$((18170 + i))
        pids+=("$(node "$port" "$store")")
        targets+=(-t "127.0.0.1:$port")
    done
    for i in $(seq 1 "$nodes"); do wait_port $((18170 + i)); done
    local before after others_before loader
    "$load" "${targets[@]}" -d "$seconds" --warmup "$warmup" -c "$connections" \
        --torrents "$torrents" --distinct-ips --server-pid "${pids[0]}" --label "$label" \
        --json "${mix[@]}" "$@" > "$work/run.json" &
    loader=$!
    # Redis and the other nodes are measured over shoal-load's timed part
    # only (its clock starts after the warm-up, within milliseconds of this
    # one), as it measures the first node.
    sleep "$warmup"
    for port in "${ports[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done
    others_before=$(others_cpu "${pids[@]:1}")
    before=$(redis_cpu)
    sleep "$seconds"
    after=$(redis_cpu)
    local others_after
    others_after=$(others_cpu "${pids[@]:1}")
    wait "$loader"
    local command_usec
    command_usec=$(redis_command_usec)
    local extra
    extra=$(awk -v a="$others_after" -v b="$others_before" 'BEGIN { print a - b }')
    python3 - "$work/run.json" "$before" "$after" "$extra" "$nodes" "$command_usec" >> "$work/results.$round.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["redis_cpu_s"] = round(float(sys.argv[3]) - float(sys.argv[2]), 2)
r["nodes"] = int(sys.argv[5])
r["command_usec"] = int(sys.argv[6])
r["server_cpu_s"] = round(r["server_cpu_s"] + float(sys.argv[4]), 2)
if r["server_cpu_s"] > 0:
    r["per_cpu_s"] = r["ok"] / r["server_cpu_s"]
print(json.dumps(r))
PY
    stop "${pids[@]}"
}

for round in $(seq 1 "$rounds"); do
    measure "memory" memory 1
    measure "redis" redis 1
    if [ -n "${BASELINE:-}" ]; then bin=$BASELINE measure "redis, baseline" redis 1; fi
    measure "redis, 2 nodes" redis 2
    # Half the one-node redis rate, both stores: the latency Redis adds.
    rate=$(python3 -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; print(int(next(r['rps'] for r in rows if r['label']=='redis') / 2))" "$work/results.$round.jsonl")
    measure "memory @ $rate/s" memory 1 --rate "$rate"
    measure "redis @ $rate/s" redis 1 --rate "$rate"
done

# Redis memory per peer: fill FILL_TORRENTS swarms evenly (zipf 0) with about
# PEERS_PER peers each, every peer from its own address (nearly every
# announce of shoal-load is a new peer), then count what the cluster holds.
flush
mem_before=$(redis_memory)
target/release/shoal --listen 127.0.0.1:18180 --udp-listen none --workers "$workers" \
    --log-level warn --allow-ip-param --store redis --redis-stats-interval 1 \
    --redis-url "redis://127.0.0.1:${ports[0]}" >/dev/null 2>&1 &
fill_pid=$!
wait_port 18180
fill_rate=${FILL_RATE:-8000}
fill_seconds=$(( fill_torrents * peers_per / fill_rate + 1 ))
"$load" -t 127.0.0.1:18180 -d "$fill_seconds" --warmup 0 --rate "$fill_rate" -c 16 \
    --torrents "$fill_torrents" --zipf 0 --distinct-ips --json > "$work/fill.json"
sleep 3
stats=$(exec 3<>/dev/tcp/127.0.0.1/18180; printf 'GET /stats.json HTTP/1.0\r\n\r\n' >&3; cat <&3)
json=${stats#*$'\r\n\r\n'}
peers=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["peers"]["total"])' "$json")
swarms=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["torrents"])' "$json")
mem_after=$(redis_memory)
stop "$fill_pid"

python3 - "$work/results" "$rounds" "$seconds" "$connections" "$peers" "$swarms" "$mem_before" "$mem_after" "${PEERS:-}" <<'PY'
import glob, json, statistics, sys
base, rounds, seconds, connections = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
peers, swarms, before, after = (int(x) for x in sys.argv[5:9])
runs = [[json.loads(l) for l in open(f)] for f in sorted(glob.glob(base + ".*.jsonl"))]
mix = f"a population of {sys.argv[9]} re-announcing peers" if sys.argv[9] else "every announce a new peer"
print(f"\n{connections} connections, {seconds} s per run, {rounds} round(s), {mix}; "
      "per CPU-s = responses per shoal CPU-second (all nodes); medians over rounds, "
      "ratios taken within each round (range in brackets)\n")
print("| run | responses/s | shoal CPU s | per shoal CPU-s | vs memory per CPU-s | Redis CPU s | announces per Redis CPU-s | Redis µs per announce: in commands / all | p50 ms | p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
def fmt(values, unit="x"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.median(values)
    return f"{m:.2f}{unit}" if len(values) == 1 else f"{m:.2f}{unit} ({min(values):.2f}-{max(values):.2f})"
for i, r in enumerate(runs[0]):
    same = [rows[i] for rows in runs]
    med = lambda k: statistics.median([x[k] for x in same])
    memory_rows = [next(x for x in rows if x["label"] == "memory") for rows in runs]
    vs = fmt([x["per_cpu_s"] / m["per_cpu_s"] for x, m in zip(same, memory_rows)]) if r["label"] != "memory" else "1.00x"
    redis = [x["rps"] * float(seconds) / x["redis_cpu_s"] if x["redis_cpu_s"] > 0.05 and not x["label"].startswith("memory") else None for x in same]
    per_redis = fmt(redis, "") if any(redis) else "-"
    if per_redis != "-":
        vals = [v for v in redis if v]
        per_redis = f"{statistics.median(vals):,.0f}"
    split = "-"
    if per_redis != "-":
        inside = statistics.median([x["command_usec"] / (x["rps"] * float(seconds)) for x in same])
        split = f"{inside:.1f} / {1e6 / statistics.median(vals):.1f}"
    errors = sum(x["failures"] + x["bad"] + x["io_errors"] for x in same)
    print(f"| {r['label']} | {med('rps'):.0f} | {med('server_cpu_s')} | {med('per_cpu_s'):.0f} | {vs} | "
          f"{med('redis_cpu_s')} | {per_redis} | {split} | {med('p50_ms')} | {med('p99_ms')} | {errors} |")
print(f"\nRedis memory: {peers} peers in {swarms} swarms: used_memory {before} -> {after} bytes, "
      f"{(after - before) / max(peers, 1):.1f} B per peer (swarm keys included)")
PY

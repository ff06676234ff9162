#!/usr/bin/env bash
# SPEC section 15, host rows, side by side in one run (release build), against the loopback
# sshd of .ci/sshd.sh (host h1):
#   first     a one-task tree (/bin/true), binary cached and tree unchanged: time from launching
#             `pexen run` to the task's start (the task writes the clock), on h1 vs on local;
#             `first-cm` the same with PEXEN_SSH reusing an ssh master connection
#             (ControlMaster/ControlPersist, stopped with `ssh -O exit` at the end)
#   sync      the same task in a tree of 10^4 small files, unchanged since the last run: wall
#             time of the run on h1 (connect + manifest + sync of nothing) vs on local
#   spawn     N /bin/true command tasks (one .tasks.ron), `--no-local --host ssh://h1?jobs=2`
#             vs `-j2` on local: wall time, ratio (target: within 1.3x)
#   floor     the same N tasks run by pexen on h1 itself, started through one ssh command, its
#             JSON events streamed back (`ssh h1 pexen run ... -j2`) vs local: what a run on
#             the loopback host costs without any per-attempt protocol (one ssh handshake, the
#             event stream through ssh, sshd and ssh on the same cores as the tasks)
#   tls       the same N tasks on a loopback `pexen worker --listen` daemon (-j 2, certificates
#             made with openssl for the run) vs local
#   closures  10^4 no-op closures of the process pool (benches/host_closures.rs, an embedding
#             binary) on a loopback TLS daemon that is that binary started as a host worker
#             (`PEXEN_WORKER=host BIN worker --listen`, -j 2), vs the local process pool at -j2:
#             tasks/s (target: >= 5 000 on the daemon)
# Each figure is the median over the rounds, rounds interleaved (every case once per round).
# With `--compare DIR` (a directory holding an earlier build's `pexen` and `host_closures`
# executables), the spawn, tls and closures cases also run with those, interleaved in the
# same rounds: before and after side by side, same machine, same load.
#
# Usage: benches/hosts.sh [-n TASKS] [-r ROUNDS] [--no-build] [--compare DIR]
# Defaults: 3000 tasks, 5 rounds. Needs .ci/sshd.sh to have run (as root).
set -euo pipefail

N=3000
ROUNDS=5
BUILD=1
BASE=
while [ $# -gt 0 ]; do
    case "$1" in
    -n) N="${2:?-n needs a number}"; shift 2 ;;
    -r) ROUNDS="${2:?-r needs a number}"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --compare) BASE="$(cd "${2:?--compare needs a directory}" && pwd)"; shift 2 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
config="${PEXEN_TEST_SSH_DIR:-$repo/target/ci-sshd}/ssh_config"
[ -f "$config" ] || { echo "no $config: run .ci/sshd.sh first" >&2; exit 2; }
export PEXEN_SSH="ssh -F $config"
if [ "$BUILD" = 1 ]; then
    (cd "$repo" && cargo build --release --quiet && cargo bench --bench host_closures --no-run --quiet)
fi
pexen="$repo/target/release/pexen"
# The newest build of benches/host_closures.rs (what `cargo bench --no-run` made).
closures=$(ls -t "$repo"/target/release/deps/host_closures-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$closures" ] || { echo "no benches/host_closures executable" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A signal ends the script through its EXIT trap (which stops the daemons it started).
trap 'exit 130' INT TERM HUP
chmod 755 "$work"

now() { date +%s.%N; }

# first: one task that records when it started.
mkdir -p "$work/first"
printf '(run: Shell("date +%%s.%%N > %s/started"))\n' "$work" > "$work/first/t.ron"
chmod 777 "$work"
# sync: 10^4 small files and one task.
mkdir -p "$work/sync/data"
for d in $(seq 0 99); do
    mkdir -p "$work/sync/data/$d"
    for f in $(seq 0 99); do echo "$d $f" > "$work/sync/data/$d/$f.txt"; done
done
echo '(run: Shell("true"))' > "$work/sync/t.ron"
# spawn: N /bin/true tasks.
mkdir -p "$work/spawn"
{
    echo '{'
    for i in $(seq 1 "$N"); do echo "  \"t$i\": (run: Cmd([\"/bin/true\"])),"; done
    echo '}'
} > "$work/spawn/all.tasks.ron"

# A TLS daemon on loopback, with certificates made for this run.
tlsdir="$work/tls"
mkdir -p "$tlsdir"
(
    cd "$tlsdir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 1 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
    for who in server client; do
        if [ $who = server ]; then ext="subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"; else ext="extendedKeyUsage=clientAuth"; fi
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key \
            -out $who.csr -subj /CN=$who 2>/dev/null
        printf '%s\n' "$ext" > $who.ext
        openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem \
            -days 1 -extfile $who.ext 2>/dev/null
    done
)
# daemon NAME CACHE BIN [ENV=VALUE]: a loopback TLS daemon of BIN with the run's certificates,
# its address line in $work/NAME.out; prints its pid.
daemon() {
    local name=$1 cache=$2 bin=$3
    shift 3
    env "$@" XDG_CACHE_HOME="$work/$cache" "$bin" worker --listen 127.0.0.1:0 -j 2 \
        --tls-cert "$tlsdir/server.pem" --tls-key "$tlsdir/server.key" --client-ca "$tlsdir/ca.pem" \
        > "$work/$name.out" 2> "$work/$name.err" &
    echo $!
}
daemon=
cdaemon=
bdaemon=
bcdaemon=
cm=(-o ControlMaster=auto -o "ControlPath=$work/cm-%C" -o ControlPersist=120)
# Set before the daemons start: whatever ends the script stops them.
trap 'ssh -F "$config" "${cm[@]}" -O exit h1 2>/dev/null; kill $daemon $cdaemon $bdaemon $bcdaemon 2>/dev/null; rm -rf "$work"' EXIT
daemon=$(daemon daemon daemon-cache "$pexen")
cdaemon=$(daemon cdaemon daemon-cache "$closures" PEXEN_WORKER=host)
if [ -n "$BASE" ]; then
    # The earlier build's own daemons (the protocol may differ).
    bdaemon=$(daemon bdaemon base-cache "$BASE/pexen")
    bcdaemon=$(daemon bcdaemon base-cache "$BASE/host_closures" PEXEN_WORKER=host)
fi
for _ in $(seq 100); do [ -s "$work/daemon.out" ] && [ -s "$work/cdaemon.out" ] && break; sleep 0.1; done
tlsport=$(sed 's/.*://' "$work/daemon.out")
cport=$(sed 's/.*://' "$work/cdaemon.out")
tlsargs=(--no-local --host "tls://127.0.0.1:$tlsport" --tls-cert "$tlsdir/client.pem"
    --tls-key "$tlsdir/client.key" --ca "$tlsdir/ca.pem")
if [ -n "$BASE" ]; then
    for _ in $(seq 100); do [ -s "$work/bdaemon.out" ] && [ -s "$work/bcdaemon.out" ] && break; sleep 0.1; done
    btlsport=$(sed 's/.*://' "$work/bdaemon.out")
    bcport=$(sed 's/.*://' "$work/bcdaemon.out")
    btlsargs=(--no-local --host "tls://127.0.0.1:$btlsport" --tls-cert "$tlsdir/client.pem"
        --tls-key "$tlsdir/client.key" --ca "$tlsdir/ca.pem")
    # The earlier binary on h1's cache too.
    "$BASE/pexen" run "$work/spawn" --state "$work/state-base" --no-local --host ssh://h1 --message-format json > /dev/null
fi

# The floor's binary, where h1's user can run it.
cp "$pexen" "$work/pexen-floor"
chmod 755 "$work/pexen-floor"

# Warm up: the binary and every tree on h1, once.
for t in first sync spawn; do
    "$pexen" run "$work/$t" --state "$work/state-$t" --no-local --host ssh://h1 --message-format json > /dev/null
done

# The ssh master connection of `first-cm`, made once.
PEXEN_SSH="ssh -F $config ${cm[*]}" "$pexen" run "$work/first" --state "$work/state-first" \
    --no-local --host ssh://h1 --message-format json > /dev/null

declare -A times
add() { times[$1]="${times[$1]:-} $2"; }
for _ in $(seq 1 "$ROUNDS"); do
    for where in local h1; do
        hostargs=()
        [ "$where" = h1 ] && hostargs=(--no-local --host "ssh://h1?jobs=2")
        t0=$(now)
        "$pexen" run "$work/first" --state "$work/state-first" "${hostargs[@]}" --message-format json > /dev/null
        add "first-$where" "$(echo "$(cat "$work/started") - $t0" | bc)"
        t0=$(now)
        "$pexen" run "$work/sync" --state "$work/state-sync" "${hostargs[@]}" --message-format json > /dev/null
        add "sync-$where" "$(echo "$(now) - $t0" | bc)"
        t0=$(now)
        "$pexen" run "$work/spawn" -j2 --state "$work/state-spawn" "${hostargs[@]}" --message-format json > /dev/null
        add "spawn-$where" "$(echo "$(now) - $t0" | bc)"
    done
    t0=$(now)
    ssh -F "$config" h1 "$work/pexen-floor" run "$work/spawn" -j2 --state "$work/state-floor" \
        --message-format json > /dev/null
    add "floor-h1" "$(echo "$(now) - $t0" | bc)"
    t0=$(now)
    PEXEN_SSH="ssh -F $config ${cm[*]}" "$pexen" run "$work/first" --state "$work/state-first" \
        --no-local --host "ssh://h1?jobs=2" --message-format json > /dev/null
    add "first-cm" "$(echo "$(cat "$work/started") - $t0" | bc)"
    t0=$(now)
    "$pexen" run "$work/spawn" --state "$work/state-tls" "${tlsargs[@]}" --message-format json > /dev/null
    add "tls-h1" "$(echo "$(now) - $t0" | bc)"
    out=$(PEXEN_BENCH_TLS="127.0.0.1:$cport" PEXEN_BENCH_CERT="$tlsdir/client.pem" \
        PEXEN_BENCH_KEY="$tlsdir/client.key" PEXEN_BENCH_CA="$tlsdir/ca.pem" "$closures")
    add "closures-local" "$(echo "$out" | sed -n 's/^local-processes-j2 .*tasks_per_s=//p')"
    add "closures-h1" "$(echo "$out" | sed -n 's/^tls-daemon .*tasks_per_s=//p')"
    if [ -n "$BASE" ]; then
        t0=$(now)
        "$BASE/pexen" run "$work/spawn" -j2 --state "$work/state-base" --no-local --host "ssh://h1?jobs=2" \
            --message-format json > /dev/null
        add "spawn-base" "$(echo "$(now) - $t0" | bc)"
        t0=$(now)
        "$BASE/pexen" run "$work/spawn" --state "$work/state-base-tls" "${btlsargs[@]}" --message-format json > /dev/null
        add "tls-base" "$(echo "$(now) - $t0" | bc)"
        out=$(PEXEN_BENCH_TLS="127.0.0.1:$bcport" PEXEN_BENCH_CERT="$tlsdir/client.pem" \
            PEXEN_BENCH_KEY="$tlsdir/client.key" PEXEN_BENCH_CA="$tlsdir/ca.pem" "$BASE/host_closures")
        add "closures-base" "$(echo "$out" | sed -n 's/^tls-daemon .*tasks_per_s=//p')"
    fi
done
times[tls-local]="${times[spawn-local]}"
times[floor-local]="${times[spawn-local]}"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); rounds: $ROUNDS; tasks: $N"
for case in first sync spawn floor tls; do
    l=$(echo "${times[$case-local]}" | median)
    h=$(echo "${times[$case-h1]}" | median)
    printf '%-6s local_s=%.3f h1_s=%.3f ratio=%.2f\n' "$case" "$l" "$h" "$(echo "$h / $l" | bc -l)"
done
printf 'first over a reused ssh master connection: h1_s=%.3f\n' "$(echo "${times[first-cm]}" | median)"
printf 'closures (10^4, tasks/s) local_processes_j2=%.0f tls_daemon=%.0f\n' \
    "$(echo "${times[closures-local]}" | median)" "$(echo "${times[closures-h1]}" | median)"
if [ -n "$BASE" ]; then
    l=$(echo "${times[spawn-local]}" | median)
    for case in spawn tls; do
        b=$(echo "${times[$case-base]}" | median)
        printf '%-6s earlier build (%s): h1_s=%.3f ratio=%.2f\n' "$case" "$BASE" "$b" "$(echo "$b / $l" | bc -l)"
    done
    printf 'closures earlier build: tls_daemon=%.0f tasks/s\n' "$(echo "${times[closures-base]}" | median)"
fi


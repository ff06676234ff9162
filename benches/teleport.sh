#!/usr/bin/env bash
# SPEC 12: what a teleport costs, against the loopback sshd of .ci/sshd.sh (host h1), release
# build. One tree of N /bin/true command tasks with its state (a journal from a local run, and
# a checkpoint of CKPT KiB), then in each round:
#   cold    the host's binary cache and teleport directory removed first: binary uploaded,
#           tree and state sent
#   warm    the same teleport again once it came back: binary cached, tree and state
#           unchanged there
#   local   `pexen run --resume` of the same tree here (the reference)
# Figures: time from launching the command to its first event (`run-started` on stdout), wall
# time to the end (state back), and bytes sent (from the `teleported` line: the binary, the
# tree, the state and the protocol's frames). Medians over the rounds, rounds interleaved.
#
# Usage: benches/teleport.sh [-n TASKS] [-r ROUNDS] [-k CKPT_KIB] [--no-build]
# Defaults: 100 tasks, 5 rounds, 1024 KiB. Needs .ci/sshd.sh to have run (as root).
# PEXEN_BIN: another pexen executable (default target/release/pexen).
set -euo pipefail

N=100
ROUNDS=5
CKPT=1024
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    -n) N="${2:?-n needs a number}"; shift 2 ;;
    -r) ROUNDS="${2:?-r needs a number}"; shift 2 ;;
    -k) CKPT="${2:?-k needs a number}"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
sshdir="${PEXEN_TEST_SSH_DIR:-$repo/target/ci-sshd}"
config="$sshdir/ssh_config"
[ -f "$config" ] || { echo "no $config: run .ci/sshd.sh first" >&2; exit 2; }
export PEXEN_SSH="ssh -F $config"
if [ "$BUILD" = 1 ]; then
    (cd "$repo" && cargo build --release --quiet)
fi
pexen="${PEXEN_BIN:-$repo/target/release/pexen}"
# The host user's home (where .ci/sshd.sh last put it).
home1="$(getent passwd pexen-h1 | cut -d: -f6)"
[ -d "$home1" ] || home1="$sshdir/home1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The tree: N tasks, and one that keeps a checkpoint of CKPT KiB and fails (so it keeps it).
mkdir -p "$work/tree"
{
    echo '{'
    for i in $(seq 1 "$N"); do echo "  \"t$i\": (run: Cmd([\"/bin/true\"])),"; done
    echo '}'
} > "$work/tree/all.tasks.ron"
printf '(run: Shell("[ -s $PEXEN_CHECKPOINT/blob ] || head -c %d /dev/urandom > $PEXEN_CHECKPOINT/blob; exit 1"))\n' \
    $((CKPT * 1024)) > "$work/tree/keep.ron"
"$pexen" run "$work/tree" -j2 --message-format json > /dev/null || true
cp -a "$work/tree/.pexen" "$work/state0"

now() { date +%s.%N; }

# Runs "$@", prints "first_event_s total_s bytes_sent".
measure() {
    local t0 first="" bytes=0 line
    t0=$(now)
    while IFS= read -r line; do
        case "$line" in
        *'"type":"teleported"'*) bytes=$(sed 's/.*"bytes_sent":\([0-9]*\).*/\1/' <<< "$line") ;;
        *'"type":"run-started"'*) [ -n "$first" ] || first=$(now) ;;
        esac
    done < <("$@" --message-format json 2>/dev/null || true)
    local t1
    t1=$(now)
    echo "$(echo "$first - $t0" | bc -l) $(echo "$t1 - $t0" | bc -l) $bytes"
}

: > "$work/cold"; : > "$work/warm"; : > "$work/local"
for r in $(seq 1 "$ROUNDS"); do
    rm -rf "$work/tree/.pexen"; cp -a "$work/state0" "$work/tree/.pexen"
    # This binary's cache entry only (the host may cache other builds), and the teleports.
    for d in "$home1"/.cache/pexen/bin/*/; do
        if cmp -s "$d/pexen" "$pexen"; then rm -rf "$d"; fi
    done
    rm -rf "$home1/.cache/pexen/teleport"
    measure "$pexen" teleport ssh://h1 "$work/tree" >> "$work/cold"
    # Again, as it came back: nothing new to send.
    measure "$pexen" teleport ssh://h1 "$work/tree" >> "$work/warm"
    rm -rf "$work/tree/.pexen"; cp -a "$work/state0" "$work/tree/.pexen"
    measure "$pexen" run "$work/tree" --resume >> "$work/local"
    echo "round $r: cold $(tail -1 "$work/cold") | warm $(tail -1 "$work/warm") | local $(tail -1 "$work/local")" >&2
done

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "binary: $(stat -c %s "$pexen") bytes; tree: $((N + 1)) tasks; checkpoint: $CKPT KiB; load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %16s %12s %14s\n' case first_event_s total_s bytes_sent
for c in cold warm local; do
    printf '%-6s %16.3f %12.3f %14s\n' "$c" \
        "$(cut -d' ' -f1 "$work/$c" | median)" \
        "$(cut -d' ' -f2 "$work/$c" | median)" \
        "$(cut -d' ' -f3 "$work/$c" | median)"
done

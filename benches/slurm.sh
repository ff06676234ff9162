#!/usr/bin/env bash
# SPEC section 15, side by side: N /bin/true tasks as Slurm jobs, one job per attempt, through
#   pexen run --slurm -j N   one NAME.tasks.ron of N tasks (json output to /dev/null); the state
#                            directory next to the tree (on the filesystem the node shares)
#   raw sbatch               N `sbatch --parsable --wrap=/bin/true` calls in a loop, then one
#                            `squeue` every 0.1 s until none of those jobs is left
# Rounds alternate the two so that the load of a shared machine hits both alike; each figure is
# the median wall time over the rounds, first submission to the last job seen done.
#
# Output: one line per contender, `NAME n=N median_s=X`, the ratio pexen/raw and a verdict
# against the SPEC target: pexen within 1.1x of raw sbatch.
#
# Usage: benches/slurm.sh [-n TASKS] [-r ROUNDS] [--no-build]
# Defaults: 200 tasks, 3 rounds. Needs a running Slurm (.ci/slurm.sh) and cargo.
# Exit status: 0 when the target is met, 1 when not, 2 on a usage or setup error.
set -euo pipefail

N=200
ROUNDS=3
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    -n) N="${2:?-n needs a number}"; shift 2 ;;
    -r) ROUNDS="${2:?-r needs a number}"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
if ! sinfo -h -o %T >/dev/null 2>&1; then
    echo "slurm.sh: Slurm is not answering; run .ci/slurm.sh first" >&2
    exit 2
fi
[ "$BUILD" = 1 ] && cargo build --release --quiet
PEXEN="$PWD/target/release/pexen"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tree" "$WORK/raw"
{
    echo "{"
    for i in $(seq 1 "$N"); do echo "  \"t$i\": (run: Cmd([\"/bin/true\"])),"; done
    echo "}"
} >"$WORK/tree/bench.tasks.ron"

now() { date +%s.%N; }

run_pexen() {
    rm -rf "$WORK/state"
    local t0 t1
    t0=$(now)
    if ! "$PEXEN" run "$WORK/tree" --slurm -j "$N" --state "$WORK/state" --message-format json >"$WORK/events.json"; then
        echo "slurm.sh: pexen's run failed:" >&2
        grep -v '"pass"' "$WORK/events.json" | grep task-finished | head -5 >&2
        exit 2
    fi
    t1=$(now)
    echo "$t1 - $t0" | bc
}

run_raw() {
    local t0 t1 ids=()
    t0=$(now)
    for _ in $(seq 1 "$N"); do
        ids+=("$(sbatch --parsable --chdir="$WORK/raw" --output=/dev/null --wrap=/bin/true)")
    done
    local list
    list=$(IFS=,; echo "${ids[*]}")
    while [ -n "$(squeue -h -j "$list" -o %i 2>/dev/null)" ]; do sleep 0.1; done
    t1=$(now)
    echo "$t1 - $t0" | bc
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

P=() R=()
for r in $(seq 1 "$ROUNDS"); do
    P+=("$(run_pexen)")
    R+=("$(run_raw)")
    echo "round $r: pexen ${P[-1]} s, raw sbatch ${R[-1]} s" >&2
done
PM=$(printf '%s\n' "${P[@]}" | median)
RM=$(printf '%s\n' "${R[@]}" | median)
RATIO=$(echo "scale=3; $PM / $RM" | bc)
echo "pexen-slurm n=$N median_s=$PM"
echo "raw-sbatch n=$N median_s=$RM"
echo "ratio pexen/raw = $RATIO (target <= 1.1)"
if [ "$(echo "$RATIO <= 1.1" | bc)" = 1 ]; then echo "verdict: met"; else echo "verdict: NOT met"; exit 1; fi

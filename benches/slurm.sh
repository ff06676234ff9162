#!/usr/bin/env bash
# SPEC section 15, side by side: N /bin/true tasks as Slurm jobs, one job per attempt, through
#   pexen run --slurm -j N   one NAME.tasks.ron of N tasks (json output to /dev/null); the state
#                            directory next to the tree (on the filesystem the node shares)
#   raw sbatch               N `sbatch --parsable --wrap=/bin/true` calls in a loop, then one
#                            `squeue` every 0.1 s until none of those jobs is left
# Rounds alternate the two so that the load of a shared machine hits both alike; each figure is
# the median wall time over the rounds, first submission to the last job seen done.
#
# Then pilot workers, side by side with job per attempt and with a local run:
#   pexen run --slurm --slurm-workers 2   P /bin/true tasks on two pilot workers (-j 1 each,
#                            then again with -j 2 each);
#                            tasks/s once the workers are up: the task-finished events after the
#                            second host-connected, over the time from that event to the end
#                            (each JSON line is timestamped as it arrives, by perl)
#   pexen run -j 2           the same P tasks on this machine (tasks/s over the whole run)
#   job per attempt          tasks/s of the median above (N / wall time)
#
# Output: one line per contender, `NAME n=N median_s=X` (and `tasks_per_s=Y`), the ratio
# pexen/raw and verdicts against the SPEC targets: pexen within 1.1x of raw sbatch; two pilot
# workers (each running as many attempts as the test node's 2 CPUs: -j 2) >= 500 tasks/s once
# up. The -j 1 figure is printed beside it.
#
# Usage: benches/slurm.sh [-n TASKS] [-p PILOT_TASKS] [-r ROUNDS] [--no-build] [--only-pilots]
# Defaults: 200 tasks, 2000 pilot tasks, 3 rounds. Needs a running Slurm (.ci/slurm.sh), cargo
# and perl.
# Exit status: 0 when the target is met, 1 when not, 2 on a usage or setup error.
set -euo pipefail

N=200
P_N=2000
ROUNDS=3
BUILD=1
ONLY_PILOTS=0
while [ $# -gt 0 ]; do
    case "$1" in
    -n) N="${2:?-n needs a number}"; shift 2 ;;
    -p) P_N="${2:?-p needs a number}"; shift 2 ;;
    --only-pilots) ONLY_PILOTS=1; shift ;;
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
mkdir -p "$WORK/tree" "$WORK/raw" "$WORK/ptree"
tasks() {
    echo "{"
    for i in $(seq 1 "$1"); do echo "  \"t$i\": (run: Cmd([\"/bin/true\"])),"; done
    echo "}"
}
tasks "$N" >"$WORK/tree/bench.tasks.ron"
tasks "$P_N" >"$WORK/ptree/bench.tasks.ron"

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

# Pilot workers, $1 attempts at once on each: prints "WALL_S TASKS_PER_S_ONCE_UP".
run_pilots() {
    rm -rf "$WORK/pstate"
    local t0 t1
    t0=$(now)
    if ! "$PEXEN" run "$WORK/ptree" --slurm --slurm-workers 2 -j "$1" --state "$WORK/pstate" --message-format json |
        perl -MTime::HiRes=time -ne 'printf "%.6f %s", time, $_' >"$WORK/pevents.json"; then
        echo "slurm.sh: pexen's pilot run failed" >&2
        exit 2
    fi
    t1=$(now)
    awk -v t0="$t0" -v t1="$t1" '
        /"type":"host-connected"/ { if (++up == 2) tup = $1 }
        /"type":"task-finished"/ { if (up >= 2) after++ }
        /"type":"run-finished"/ { tend = $1 }
        END { printf "%.3f %.1f\n", t1 - t0, after / (tend - tup) }' "$WORK/pevents.json"
}

# Local: prints "WALL_S TASKS_PER_S".
run_local() {
    rm -rf "$WORK/lstate"
    local t0 t1
    t0=$(now)
    "$PEXEN" run "$WORK/ptree" -j 2 --state "$WORK/lstate" --message-format json >/dev/null
    t1=$(now)
    echo "$t0 $t1 $P_N" | awk '{ printf "%.3f %.1f\n", $2 - $1, $3 / ($2 - $1) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

P=() R=() PW=() PR=() P2W=() P2R=() LW=() LR=()
for r in $(seq 1 "$ROUNDS"); do
    if [ "$ONLY_PILOTS" = 0 ]; then
        P+=("$(run_pexen)")
        R+=("$(run_raw)")
        echo "round $r: pexen ${P[-1]} s, raw sbatch ${R[-1]} s" >&2
    fi
    read -r w rate < <(run_pilots 1)
    PW+=("$w") PR+=("$rate")
    read -r w2 rate2 < <(run_pilots 2)
    P2W+=("$w2") P2R+=("$rate2")
    read -r lw lrate < <(run_local)
    LW+=("$lw") LR+=("$lrate")
    echo "round $r: pilots -j 1: ${w} s (${rate} tasks/s once up), pilots -j 2: ${w2} s (${rate2} tasks/s once up), local -j 2: ${lw} s (${lrate} tasks/s)" >&2
done
STATUS=0
if [ "$ONLY_PILOTS" = 0 ]; then
    PM=$(printf '%s\n' "${P[@]}" | median)
    RM=$(printf '%s\n' "${R[@]}" | median)
    RATIO=$(echo "scale=3; $PM / $RM" | bc)
    echo "pexen-slurm n=$N median_s=$PM tasks_per_s=$(echo "scale=1; $N / $PM" | bc)"
    echo "raw-sbatch n=$N median_s=$RM"
    echo "ratio pexen/raw = $RATIO (target <= 1.1)"
    if [ "$(echo "$RATIO <= 1.1" | bc)" = 1 ]; then echo "verdict: met"; else echo "verdict: NOT met"; STATUS=1; fi
fi
PWM=$(printf '%s\n' "${PW[@]}" | median)
PRM=$(printf '%s\n' "${PR[@]}" | median)
P2WM=$(printf '%s\n' "${P2W[@]}" | median)
P2RM=$(printf '%s\n' "${P2R[@]}" | median)
LWM=$(printf '%s\n' "${LW[@]}" | median)
LRM=$(printf '%s\n' "${LR[@]}" | median)
echo "pexen-pilots n=$P_N workers=2 j=1 median_s=$PWM tasks_per_s_once_up=$PRM"
echo "pexen-pilots n=$P_N workers=2 j=2 median_s=$P2WM tasks_per_s_once_up=$P2RM"
echo "pexen-local n=$P_N j=2 median_s=$LWM tasks_per_s=$LRM"
# The target is for two workers; each runs as many attempts at once as it has CPUs (2 here).
if [ "$(echo "$P2RM >= 500" | bc)" = 1 ]; then echo "verdict (pilots, -j 2 each, >= 500 tasks/s): met"; else echo "verdict (pilots, -j 2 each, >= 500 tasks/s): NOT met"; STATUS=1; fi
exit "$STATUS"

#!/usr/bin/env bash
# Issue 15, side by side: the closure scheduler (benches/throughput.rs, one shape per process)
# against Taskflow (C++), the fastest DAG executor in common use, on the same shapes: independent
# tasks, a chain, a fan-out, a random DAG of degree 4 and tasks that all claim one lock. Both
# figures are nanoseconds per task from the start of validation (Taskflow: of building its graph)
# to the end of teardown, task-list building excluded, on 2 workers (see
# benches/taskflow_driver.cpp).
# Rounds are interleaved (every shape with every program once per round, in turn), so that a
# busy machine slows every program alike; per shape the script prints each program's medians,
# the ratio of medians, and the paired ratio: each round's pexen figure over Taskflow's in the
# same round, then the median of those (steadier when the machine's speed drifts).
#
# Output: per shape and program, `SHAPE PROGRAM ns=X (validate / run / drop) bytes=B`, then
# `SHAPE pexen/taskflow medians=R paired=P`, and a verdict against issue 15's target: every
# shape within 1.5x of Taskflow (paired).
#
# Usage: benches/taskflow.sh --taskflow DIR [-n TASKS] [-r ROUNDS] [--shapes A,B,..]
#                            [--compare BIN] [--no-build]
# DIR is a checkout of https://github.com/taskflow/taskflow (header-only; the figures of
# doc/benchmarks.md used commit 83f90a27), whose `taskflow/` directory is included. --compare
# adds another build of the throughput bench (a copy of its binary) to every round.
# Defaults: 1000000 tasks, 7 rounds, all five shapes. Needs bash, cargo, awk and a C++20
# compiler (g++ or $CXX). Exit status: 0 when every shape is within 1.5x, 1 when not, 2 on a
# usage or setup error or a failed run.
set -euo pipefail

N=1000000
ROUNDS=7
SHAPES="independent,chain,fan-out,random-dag4,one-lock"
TASKFLOW=""
COMPARE=""
BUILD=1

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --taskflow) TASKFLOW="${2:?--taskflow needs a directory}"; shift 2 ;;
    -n) N="${2:?-n needs a number}"; shift 2 ;;
    -r) ROUNDS="${2:?-r needs a number}"; shift 2 ;;
    --shapes) SHAPES="${2:?--shapes needs a list}"; shift 2 ;;
    --compare) COMPARE="${2:?--compare needs a binary}"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage ;;
    *) echo "taskflow.sh: unknown argument: $1" >&2; usage ;;
    esac
done
for v in N ROUNDS; do
    if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
        echo "taskflow.sh: $v must be a positive integer, got '${!v}'" >&2
        exit 2
    fi
done
if [ -z "$TASKFLOW" ] || [ ! -f "$TASKFLOW/taskflow/taskflow.hpp" ]; then
    echo "taskflow.sh: --taskflow DIR must be a Taskflow checkout (DIR/taskflow/taskflow.hpp)" >&2
    exit 2
fi
if [ -n "$COMPARE" ] && [ ! -x "$COMPARE" ]; then
    echo "taskflow.sh: --compare $COMPARE is not an executable" >&2
    exit 2
fi
CXX="${CXX:-g++}"
for tool in cargo awk "$CXX"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "taskflow.sh: $tool not found" >&2
        exit 2
    fi
done

here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "building the Taskflow driver ($CXX -O2 -std=c++20) ..." >&2
"$CXX" -O2 -std=c++20 -pthread -I "$TASKFLOW" -o "$work/taskflow" \
    "$here/benches/taskflow_driver.cpp"

if [ "$BUILD" = 1 ]; then
    echo "building the throughput bench ..." >&2
    (cd "$here" && cargo bench --bench throughput --no-run >&2 2>&1)
fi
pexen="$(ls -t "$here"/target/release/deps/throughput-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)"
if [ -z "$pexen" ]; then
    echo "taskflow.sh: no throughput bench binary in target/release/deps (drop --no-build)" >&2
    exit 2
fi

programs=(pexen)
[ -n "$COMPARE" ] && programs+=(compare)
programs+=(taskflow)

# One line per run: ROUND SHAPE PROGRAM KEY=VALUE...
results="$work/results"
: >"$results"
IFS=',' read -r -a shapes <<<"$SHAPES"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS ..." >&2
    for shape in "${shapes[@]}"; do
        for program in "${programs[@]}"; do
            # A failed run is an error of the setup (exit 2), not a target missed (exit 1).
            case "$program" in
            pexen) out="$("$pexen" --child "$shape" "$N")" || exit 2 ;;
            compare) out="$("$COMPARE" --child "$shape" "$N")" || exit 2 ;;
            taskflow) out="$("$work/taskflow" "$shape" "$N")" || exit 2 ;;
            esac
            echo "$round $shape $program $out" >>"$results"
        done
    done
done

awk -v shapes="$SHAPES" -v programs="${programs[*]}" '
function median(list,    n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) {
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]
        a[j + 1] = t
    }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function value(key,    i, kv) {
    for (i = 4; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == key) return kv[2]
    }
    return ""
}
{
    key = $2 SUBSEP $3
    for (k = 1; k <= 5; k++) {
        name = (k == 1) ? "ns_per_task" : (k == 2) ? "validate_ns" : (k == 3) ? "run_ns" : (k == 4) ? "drop_ns" : "bytes_per_task"
        v = value(name)
        if (v != "") all[key, name] = all[key, name] " " v
    }
    ns[$1, $2, $3] = value("ns_per_task")
    rounds[$1] = 1
}
END {
    nshapes = split(shapes, s, ",")
    nprog = split(programs, p, " ")
    met = 1
    for (i = 1; i <= nshapes; i++) {
        for (j = 1; j <= nprog; j++) {
            key = s[i] SUBSEP p[j]
            line = sprintf("%-12s %-8s ns=%6.0f", s[i], p[j], median(all[key, "ns_per_task"]))
            if (all[key, "validate_ns"] != "")
                line = line sprintf(" (%.0f / %.0f / %.0f)", median(all[key, "validate_ns"]), median(all[key, "run_ns"]), median(all[key, "drop_ns"]))
            print line sprintf(" bytes=%.0f", median(all[key, "bytes_per_task"]))
        }
        for (j = 1; j < nprog; j++) {
            paired = ""
            for (r in rounds) {
                a = ns[r, s[i], p[j]]; b = ns[r, s[i], "taskflow"]
                if (a != "" && b + 0 > 0) paired = paired " " a / b
            }
            ratio = median(all[s[i] SUBSEP p[j], "ns_per_task"]) / median(all[s[i] SUBSEP "taskflow", "ns_per_task"])
            pr = median(paired)
            printf "%-12s %s/taskflow medians=%.2f paired=%.2f\n", s[i], p[j], ratio, pr
            if (j == 1 && pr > 1.5) met = 0
        }
    }
    if (met) print "verdict: every shape within 1.5x of Taskflow (paired): met"
    else print "verdict: every shape within 1.5x of Taskflow (paired): NOT met"
    exit met ? 0 : 1
}' "$results"

#!/usr/bin/env bash
# Run a small kernel workload under valgrind memcheck and print the figures that
# matter: "definitely lost" bytes and the ERROR SUMMARY (invalid reads/writes,
# uses of uninitialised values, bad frees) attributed to fastrnn.
#
# Usage:
#   tools/valgrind.sh                  # copy of HEAD: an OpenMP and a serial build
#   tools/valgrind.sh --working-tree   # copy of the checkout as it is now
#   tools/valgrind.sh --only openmp|serial
#
# Builds happen in ${FASTRNN_VG_DIR:-/tmp/fastrnn-vg}/{openmp,serial} (never in
# place), with FASTRNN_DEBUG=1 (-O0 -g, bounds checks) so reports carry .pyx
# line numbers. The serial build (FASTRNN_NO_OPENMP=1) is the one whose figures
# are free of libgomp's thread pool (its thread stacks and TLS are "possibly
# lost" at exit, never "definitely lost"); the OpenMP build is run too, with 1
# and 2 threads, because that is what users get.
#
# Python runs with PYTHONMALLOC=malloc so that memcheck sees every allocation;
# tools/valgrind-python.supp holds the few suppressions CPython and the dynamic
# loader need (extra files: VALGRIND_SUPP=/path/a.supp:/path/b.supp).
#
# Every record (error or definitely-lost block) is attributed: fastrnn's when a
# frame of its stack lies in fastrnn's compiled modules, else CPython's or a
# library's; a baseline run that only imports fastrnn shows the latter's level.
#
# Exit status: 0 when no run has a definitely-lost block or an error of fastrnn's.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
ref=HEAD
working_tree=0
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --ref) ref=$2; shift 2 ;;
        --working-tree) working_tree=1; shift ;;
        --only) only=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }

PY=$(command -v "${PYTHON:-python}") || { echo "no ${PYTHON:-python} on PATH" >&2; exit 2; }
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")   # absolute (the runs cd away)
# the interpreter itself, not a wrapper script (pyenv shims exec it, and valgrind
# would trace the shell instead)
PYEXE=$("$PY" -c 'import sys; print(sys.executable)')
root=${FASTRNN_VG_DIR:-/tmp/fastrnn-vg}
mkdir -p "$root"
supp_args=(--suppressions="$here/tools/valgrind-python.supp")
IFS=: read -r -a extra <<<"${VALGRIND_SUPP:-}"
for s in "${extra[@]}"; do [ -n "$s" ] && supp_args+=(--suppressions="$s"); done

# copy_tree DEST and build DEST ENV... (shared with the other build-copy tool)
. "$here/tools/_build_copy.sh"

# The workload: every kernel entry point, both dtypes, ids and dense input,
# 1 and 2 threads, odd batch sizes (B=1 takes the single-sequence paths), with
# fresh and caller-provided gradient buffers; then a tiny CharLM (fit with each
# optimizer, generate, perplexity) when this tree has one. Small sizes: memcheck
# runs it 20-50x slower than native.
cat > "$root/workload.py" <<'EOF'
import sys
import numpy as np
import fastrnn
from fastrnn import reference

threads = [int(t) for t in sys.argv[1].split(",")]
# small problems normally run on fewer threads than asked; give every thread work
if hasattr(fastrnn._core._rnn, "set_min_flops_per_thread"):
    fastrnn._core._rnn.set_min_flops_per_thread(0)
rng = np.random.default_rng(0)
checked = 0
for dtype in (np.float32, np.float64):
    for B, T, D, H, V in [(3, 5, 7, 9, 7), (1, 4, 5, 300, 5), (4, 3, 6, 5, 8)]:
        p = fastrnn.init_params(D, H, V, dtype=dtype, seed=B, init="uniform")
        p64 = {k: v.astype(np.float64) for k, v in p.items()}
        for dense in (False, True):
            X = rng.standard_normal((B, T, D)) if dense else rng.integers(0, D, (B, T))
            Y = rng.integers(0, V, (B, T))
            h0 = rng.standard_normal((B, H)) * 0.5
            r_loss = reference.loss_and_grad(p64, X, Y, h0)[0]
            for nt in threads:
                for nonlin in ("tanh", "relu"):
                    out = {k: np.empty_like(v) for k, v in p.items()} if nt > 1 else None
                    loss, g, hT = fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity=nonlin,
                                                        num_threads=nt, out=out)
                    logits, h = fastrnn.forward(p, X, h0, nonlinearity=nonlin,
                                                num_threads=nt, return_states=True)[:2]
                    assert np.isfinite(loss) and np.isfinite(logits).all()
                    if nonlin == "tanh":
                        tol = 1e-9 if dtype == np.float64 else 1e-4
                        assert abs(loss - r_loss) <= tol * abs(r_loss), (loss, r_loss)
                    checked += 1
print(f"kernel workload: {checked} loss_and_grad + forward pairs checked", flush=True)

CharLM = getattr(fastrnn, "CharLM", None)
if CharLM is not None:
    text = "the quick brown fox jumps over the lazy dog. " * 6
    for opt in ("sgd", "adagrad", "adam"):
        lm = CharLM(text, hidden_size=12, seed=0)
        lm.fit(text, epochs=1, batch_size=2, num_steps=8, lr=0.05, optimizer=opt,
               progress=False, num_threads=threads[-1], seed=0)
    s = lm.generate("the ", 40, seed=1, top_k=3)
    s += lm.generate("the ", 40, seed=2, greedy=True)
    ppl = lm.perplexity(text[:100], num_threads=threads[-1])
    print(f"CharLM workload: fit x3, generate x2, perplexity {ppl:.2f}", flush=True)
EOF

# Split a memcheck log into error and leak records and attribute each: a record
# is fastrnn's when any frame of its stack is in fastrnn's compiled modules
# (fastrnn/_rnn*.so, fastrnn/_lm*.so, csrc/*). CPython itself (uninitialised-value
# reports inside the interpreter's own startup, objects kept at exit) and the
# dynamic loader produce records in any Python program; they are counted
# separately and compared with a baseline run that only imports fastrnn.
cat > "$root/analyze.py" <<'EOF'
import re, sys
OURS = re.compile(r"fastrnn/_(rnn|lm)[.a-z0-9_-]*\.so|csrc/|/_rnn\.c|/_lm\.c|__pyx_[a-z0-9_]*7fastrnn")
log = open(sys.argv[1], errors="replace").read()
label = sys.argv[2]
pid = re.compile(r"^==\d+== ?", re.M)
blocks, cur = [], []
for line in log.splitlines():
    body = pid.sub("", line)
    if not body.strip():
        if cur:
            blocks.append(cur)
        cur = []
    else:
        cur.append(body)
if cur:
    blocks.append(cur)
errors_ours = errors_other = 0
lost_ours = lost_other = 0
first = []
for blk in blocks:
    if blk[0].startswith("Thread ") and len(blk) > 1:   # "Thread 3:" precedes a record
        blk = blk[1:]
    head = blk[0]
    ours = any(OURS.search(l) for l in blk)
    # "N bytes in ..." or "N (D direct, I indirect) bytes in ...": count direct bytes
    m = re.match(r"([\d,]+)(?: \(([\d,]+) direct, [\d,]+ indirect\))? bytes in [\d,]+ "
                 r"blocks are definitely lost", head)
    if m:
        n = int((m.group(2) or m.group(1)).replace(",", ""))
        if ours:
            lost_ours += n; first.append(blk)
        else:
            lost_other += n
    elif re.match(r"(Invalid (read|write|free)|Conditional jump|Use of uninitialised|"
                  r"Mismatched free|Syscall param|Source and destination overlap|"
                  r"Argument .* of function)", head):
        if ours:
            errors_ours += 1; first.append(blk)
        else:
            errors_other += 1
summ = [l for l in map(lambda x: pid.sub("", x), log.splitlines())
        if "definitely lost:" in l or "ERROR SUMMARY:" in l or "no leaks are possible" in l]
print(f"   valgrind says:  {' | '.join(s.strip() for s in summ[-2:])}")
print("                   (ERROR SUMMARY counts definitely-lost records as errors too)")
print(f"   fastrnn's own:  definitely lost: {lost_ours} bytes | error contexts: {errors_ours}")
print(f"   elsewhere:      definitely lost: {lost_other} bytes | error contexts: "
      f"{errors_other} (CPython/ld.so/libraries; compare with the baseline)")
for blk in first[:5]:
    print("   -- " + "\n      ".join(blk[:14]))
open(sys.argv[1] + ".figures", "w").write(f"{lost_ours} {errors_ours} {lost_other} {errors_other}\n")
sys.exit(1 if (lost_ours or errors_ours) else 0)
EOF

cat > "$root/baseline.py" <<'EOF'
import numpy as np
import fastrnn
from fastrnn import reference
print("baseline: imported fastrnn, no kernel calls", flush=True)
EOF

cat > "$root/selfcheck.py" <<'EOF'
# A deliberate out-of-bounds read through the private, unvalidated kernel entry
# (id 4 with D = 4: one row past the end of W_xh): memcheck must report it, and
# analyze.py must attribute it to fastrnn, or the figures below mean nothing.
import numpy as np
import fastrnn
from fastrnn import _rnn
p = fastrnn.init_params(4, 3, 5, dtype="float64", seed=0)
ids = np.array([[1], [4]], np.int32)
_rnn.forward(p["W_xh"], p["W_hh"], p["b_h"], p["W_hq"], p["b_q"], ids, np.empty((0, 0)),
             np.zeros((3, 1, 3)), np.zeros((2, 3)), np.zeros((2, 5)),
             np.empty(0, np.int32), np.zeros(1), "tanh", 1)
EOF

status=0
summary=()
run() {  # run LABEL DEST SCRIPT THREADS
    local label=$1 dest=$2 script=$3 threads=$4 log="$root/$1.log"
    echo "== valgrind memcheck: $label ($(basename "$script") $threads)"
    (cd "$dest" && PYTHONMALLOC=malloc PYTHONPATH="$dest" OMP_WAIT_POLICY=passive \
        valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
            --errors-for-leak-kinds=definite --num-callers=40 --track-origins=yes \
            "${supp_args[@]}" --log-file="$log" \
            "$PYEXE" "$script" "$threads") || true
    local rc=0
    "$PY" "$root/analyze.py" "$log" "$label" || { status=1; rc=1; }
    summary+=("$label: $(cat "$log.figures" | awk '{printf "fastrnn: %s bytes definitely lost, %s error contexts; elsewhere: %s bytes, %s contexts", $1, $2, $3, $4}')")
    return $rc
}

if [ -z "$only" ] || [ "$only" = serial ]; then
    copy_tree "$root/serial"
    build "$root/serial" FASTRNN_DEBUG=1 FASTRNN_NO_OPENMP=1
    echo "== self-check: a deliberate out-of-bounds read must be reported as fastrnn's"
    if run selfcheck "$root/serial" "$root/selfcheck.py" 1 >/dev/null; then
        echo "!! memcheck did not report the deliberate overflow (or the private"
        echo "   fastrnn._rnn.forward signature changed: update selfcheck.py): see $root/selfcheck.log"
        exit 1
    fi
    echo "   ok: memcheck reported $(awk '{print $2}' "$root/selfcheck.log.figures") error" \
         "context(s) in fastrnn's kernels"
    status=0
    summary=()
    run serial-baseline "$root/serial" "$root/baseline.py" 1
    run serial "$root/serial" "$root/workload.py" 1
fi
if [ -z "$only" ] || [ "$only" = openmp ]; then
    copy_tree "$root/openmp"
    build "$root/openmp" FASTRNN_DEBUG=1
    run openmp-1thread "$root/openmp" "$root/workload.py" 1
    run openmp-2threads "$root/openmp" "$root/workload.py" 1,2
fi

echo "== summary"
for line in "${summary[@]}"; do echo "   $line"; done
exit $status

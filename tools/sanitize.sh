#!/usr/bin/env bash
# Run the kernel tests against a bounds-checked debug build and against an
# AddressSanitizer + UndefinedBehaviorSanitizer build of fastrnn.
#
# Both builds happen in a throw-away copy of the tree (never in place: the
# checkout's own compiled modules belong to whoever built them), in
# ${FASTRNN_SAN_DIR:-/tmp/fastrnn-san}/{debug,asan}.
#
# Usage:
#   tools/sanitize.sh                 # copy of HEAD, both builds
#   tools/sanitize.sh --ref REF       # copy of another commit
#   tools/sanitize.sh --working-tree  # copy of the checkout as it is now
#                                     # (tracked + untracked, not ignored files)
#   tools/sanitize.sh --only debug|asan
#   tools/sanitize.sh ... -- PYTEST_ARGS   # e.g. -- -k hostile -x
#
# Builds (see setup.py):
#   debug: FASTRNN_DEBUG=1 -> Cython boundscheck/initializedcheck/nonecheck on,
#          -O0 -g -UNDEBUG (so C asserts fire too).
#   asan:  FASTRNN_SANITIZE=address,undefined (gcc's libasan/libubsan, which Debian
#          ships with gcc), run with libasan preloaded into the (uninstrumented)
#          Python; any ASan or UBSan report aborts the test process.
#
# Exit status: 0 when every selected build's tests pass with no sanitizer report.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
ref=HEAD
working_tree=0
only=""
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ref) ref=$2; shift 2 ;;
        --working-tree) working_tree=1; shift ;;
        --only) only=$2; shift 2 ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# resolved once, here: the builds and runs below cd into the copy, where a relative
# PATH entry (PATH=.venv/bin:$PATH) would find another Python
PY=$(command -v "${PYTHON:-python}") || { echo "no ${PYTHON:-python} on PATH" >&2; exit 2; }
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")   # absolute; a venv's link kept
root=${FASTRNN_SAN_DIR:-/tmp/fastrnn-san}
tests=(tests/test_kernels.py tests/test_validation.py tests/test_properties.py
       tests/test_hostile.py tests/test_lm_kernels.py tests/test_generate.py
       tests/test_layers.py)
mkdir -p "$root"

# copy_tree DEST and build DEST ENV... (shared with the other build-copy tool)
. "$here/tools/_build_copy.sh"

run_tests() {  # run_tests DEST LABEL ENV...
    local dest=$1 label=$2; shift 2
    local present=()
    for t in "${tests[@]}"; do [ -f "$dest/$t" ] && present+=("$t"); done
    echo "== $label: pytest ${present[*]} ${pytest_args[*]:-}"
    # -p no:cacheprovider: the copy may be read by others; keep it clean.
    # The check below makes sure the copy's fastrnn (not the editable install of
    # the checkout) is the one under test.
    (cd "$dest" && env "$@" "$PY" -c "
import fastrnn, os, sys
assert os.path.realpath(fastrnn.__file__).startswith(os.path.realpath('$dest')), fastrnn.__file__
print('fastrnn under test:', os.path.dirname(fastrnn.__file__), fastrnn.build_info()['openmp'] and 'openmp' or 'serial')
" && env "$@" "$PY" -m pytest -q -p no:cacheprovider "${present[@]}" \
        ${pytest_args[@]+"${pytest_args[@]}"}) 2>&1 | tee "$root/$label.log"
    local rc=${PIPESTATUS[0]}
    if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$root/$label.log"; then
        echo "!! $label: sanitizer reports in $root/$label.log"
        grep -nE "ERROR: AddressSanitizer|runtime error:" "$root/$label.log" | sort | uniq -c | head -20
        rc=1
    fi
    echo "== $label: exit status $rc (log: $root/$label.log)"
    return "$rc"
}

status=0
if [ -z "$only" ] || [ "$only" = debug ]; then
    copy_tree "$root/debug"
    build "$root/debug" FASTRNN_DEBUG=1
    run_tests "$root/debug" debug PYTHONFAULTHANDLER=1 || status=1
fi

if [ -z "$only" ] || [ "$only" = asan ]; then
    libasan=$(gcc -print-file-name=libasan.so)
    if [ ! -e "$libasan" ]; then
        echo "libasan.so not found (apt-get install gcc / libasan8)" >&2
        exit 1
    fi
    copy_tree "$root/asan"
    build "$root/asan" FASTRNN_SANITIZE=address,undefined
    # detect_leaks=0: CPython's own allocations at exit are not ours.
    # allocator_may_return_null=1, max_allocation_size_mb: an impossible allocation
    # (tests ask for H=10**9) must return NULL -> MemoryError, as without ASan, not
    # abort the process; ASan's allocator ignores the kernel's overcommit limits, so
    # cap single allocations, and hard_rss_limit_mb kills a runaway test process
    # before the machine's OOM killer has to.
    # halt_on_error / abort_on_error: any report kills the test process (and fails
    # the run), so nothing is missed in a long log.
    # Self-check first: the harness must catch a deliberate heap overflow (an id
    # past the end of W_xh handed to the private, unvalidated kernel entry).
    echo "== asan: self-check (a deliberate out-of-bounds read must be reported)"
    cat > "$root/asan/selfcheck.py" <<'EOF'
import numpy as np
import fastrnn
from fastrnn import _rnn
# exact-size copies: init_params over-allocates to start each array on a cache line,
# and a read into that slack is not an overflow (tests/conftest.make_problem copies too)
p = {k: v.copy() for k, v in fastrnn.init_params(4, 3, 5, dtype="float64", seed=0).items()}
ids = np.array([[1], [4]], np.int32)  # D = 4: id 4 is one row past the end of W_xh
_rnn.forward(p["W_xh"], p["W_hh"], p["b_h"], p["W_hq"], p["b_q"], ids, np.empty((0, 0)),
             np.zeros((3, 1, 3)), np.zeros((2, 3)), np.zeros((2, 5)),
             np.empty(0, np.int32), np.zeros(1), "tanh", 1)
EOF
    selfcheck=$(cd "$root/asan" && LD_PRELOAD="$libasan" PYTHONMALLOC=malloc \
                ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=. "$PY" selfcheck.py 2>&1 || true)
    if grep -q "heap-buffer-overflow" <<<"$selfcheck"; then
        echo "   ok: AddressSanitizer reported the deliberate heap-buffer-overflow"
    else
        echo "!! asan: the deliberate overflow was NOT reported: the sanitizer is not active"
        echo "   (or the private fastrnn._rnn.forward signature changed: update this check)"
        echo "$selfcheck" | tail -20
        exit 1
    fi
    # log_path: the reports go to files as well as stderr. pytest captures a test's
    # stderr and loses it when the process aborts, so a report from inside a test
    # showed up only as "Fatal Python error: Aborted".
    rm -f "$root"/asan-report.*
    run_tests "$root/asan" asan \
        LD_PRELOAD="$libasan" \
        ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=8192:hard_rss_limit_mb=12288:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path="$root/asan-report" \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path="$root/asan-report" \
        PYTHONFAULTHANDLER=1 PYTHONMALLOC=malloc || status=1
    # Only reports with fastrnn's code on the stack count: test children that crash
    # on purpose (a ctypes read of a bad address) or ask for impossible allocations
    # (warnings under allocator_may_return_null) write files here too.
    for f in "$root"/asan-report.*; do
        [ -e "$f" ] || continue
        if grep -qE "ERROR: AddressSanitizer|runtime error:" "$f" \
                && grep -qE "csrc/|fastrnn" "$f"; then
            echo "!! asan: sanitizer report in $f:"
            head -30 "$f"
            status=1
        fi
    done
fi
exit $status

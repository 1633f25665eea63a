"""Check that the installed fastrnn runs its compiled kernels (and OpenMP).

Usage: python check_build_info.py [--openmp | --serial] [--version X.Y.Z]

Run it from a directory without the source tree, against an installed wheel
(tools/check_wheel.sh and the cibuildwheel test-command do). Exits non-zero with
the reason when the kernels are missing or OpenMP is not what was asked for.
"""
import argparse
import json
import sys

import fastrnn

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
mode = parser.add_mutually_exclusive_group()
mode.add_argument("--openmp", action="store_true", help="require OpenMP kernels")
mode.add_argument("--serial", action="store_true", help="require serial kernels")
parser.add_argument("--version", help="require this fastrnn.__version__")
args = parser.parse_args()

info = fastrnn.build_info()
print(f"fastrnn {fastrnn.__version__} from {fastrnn.__file__}")
print(json.dumps(info, indent=2, default=str))
problems = []
if not info["compiled"]:
    problems.append(f"compiled kernels not in use: {info.get('import_error')}")
if args.openmp and not info["openmp"]:
    problems.append("built without OpenMP (expected an OpenMP build)")
if args.serial and info["openmp"]:
    problems.append("built with OpenMP (expected a serial build)")
if args.version and fastrnn.__version__ != args.version:
    problems.append(f"version {fastrnn.__version__}, expected {args.version}")
for p in problems:
    print(f"check_build_info: FAIL: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)

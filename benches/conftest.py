"""pytest configuration of the benchmark suites in benches/.

    pip install -e '.[bench]'          # pytest-benchmark
    pytest benches/                    # a few minutes on 2 cores
    pytest benches/test_bench_train.py -k medium --benchmark-json=bench.json
    FASTRNN_BENCH_SECONDS=10 pytest benches/   # more rounds, steadier medians

The suites reuse the implementations of benches/compare.py (the comparison
command), so the benches and its table time the same code. benches/ is not a
package: this file puts it on sys.path, so ``import compare`` and
``import _bench_common`` work under any pytest import mode. ``pytest`` from the
repository root collects only tests/ (``testpaths`` in pyproject.toml); the
benches run only when asked for. Without pytest-benchmark every bench skips with
the reason; without PyTorch the PyTorch benches do.
"""
import sys
from pathlib import Path

import pytest

BENCHES = str(Path(__file__).resolve().parent)
if BENCHES not in sys.path:
    sys.path.insert(0, BENCHES)

try:
    import pytest_benchmark  # noqa: F401
except ImportError:
    @pytest.fixture
    def benchmark():
        pytest.skip("pytest-benchmark is not installed: pip install 'fastrnn[bench]'")

"""benches/ceiling.py (the one-core ceiling of the speed-up over PyTorch) keeps
working. Nothing here is compared with a time: only the table's arithmetic."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benches" / "ceiling.py"      # not in an sdist

pytestmark = pytest.mark.skipif(not BENCH.is_file(), reason=f"{BENCH} not present (an sdist)")


def test_one_config_table():
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(BENCH), "--configs", "lstm-b1", "--rounds", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "float32 gemm rate" in proc.stdout
    row = re.search(r"^lstm-b1\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)x\s+"
                    r"([\d.]+)%$", proc.stdout, re.M)
    assert row, proc.stdout
    fast, torch_ms, floor, ratio, ceiling, pct = map(float, row.groups())
    assert 0 < floor and 0 < fast and 0 < torch_ms
    assert ratio == pytest.approx(torch_ms / fast, rel=0.06, abs=0.011)
    assert ceiling == pytest.approx(torch_ms / floor, rel=0.06, abs=0.011)
    assert pct == pytest.approx(100 * floor / fast, rel=0.06, abs=0.11)


def test_refuses_unknown_configs():
    proc = subprocess.run([sys.executable, str(BENCH), "--configs", "lstm-huge"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown configurations" in proc.stderr

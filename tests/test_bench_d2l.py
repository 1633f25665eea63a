"""benches/d2l_end_to_end.py (issue 13's d2l current-edition row) keeps working: one
epoch of its three runs. Nothing here is timed or compared with a time."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BENCH = ROOT / "benches" / "d2l_end_to_end.py"      # not in an sdist

pytestmark = [
    pytest.mark.skipif(not (DATA / "timemachine.txt").is_file(),
                       reason=f"{DATA / 'timemachine.txt'} not present"),
    pytest.mark.skipif(not BENCH.is_file(), reason=f"{BENCH} not present (an sdist)")]


def test_quick_run_checks_out(tmp_path):
    """In a subprocess, as it is run (PyTorch's thread count and flush-denormal mode
    are process-wide)."""
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--epochs", "1",
                           "--data-dir", str(DATA), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    r = json.loads(out.read_text())
    assert "(a)/(b) fit / steps alone" in text
    assert r["protocol"]["steps"] == 10 and r["protocol"]["train_windows"] == 10_000
    assert r["protocol"]["val_windows"] == 5_000
    # (a) fit and (b) the bare steps ran the same optimizer steps on the same batches
    assert r["params_max_abs_diff_fit_vs_steps"] == 0.0
    vp = r["val_ppl"]
    assert vp["steps"] == vp["fit_recomputed"]
    # fit's validation (the fused kernel for this Elman model) against an independent
    # float64 NumPy cross-entropy over forward's logits
    assert vp["fit"] == pytest.approx(vp["fit_recomputed"], rel=1e-5)
    assert 1 < vp["fit"] < 28                     # better than uniform over 28 tokens
    names = ["fit", "steps"] + (["torch"] if r["torch"] else [])
    assert sorted(r["seconds"]) == sorted(names)
    assert all(len(v) == 1 and v[0] > 0 for v in r["seconds"].values())
    assert r["ratio_fit_over_steps"] > 0
    bd = r["fit_breakdown_median_s"]
    assert bd["train_loop_s"] > 0 and bd["validation_s"] > 0
    if r["torch"]:
        assert r["ratio_torch_over_fit"] > 0 and 1 < vp["torch"] < 28

"""The `fastrnn` command end to end on a tiny corpus (subprocess where it matters)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import CharLM
from fastrnn.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
# children import the fastrnn under test (installed or in-place), never the bare
# source tree (which has no compiled modules when the package is installed)
PKG_ROOT = Path(fastrnn.__file__).resolve().parents[1]
SHARED_TM = ROOT.parent / "shared" / "data" / "timemachine.txt"
TINY = ["--hidden", "16", "--steps", "8", "--batch", "4", "--threads", "1",
        "--sample-length", "30", "--no-progress"]
CORPUS = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
          "it was the age of foolishness, it was the epoch of belief. ") * 12


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text(CORPUS, encoding="utf-8")
    return p


def run(args, cwd, timeout=120, **kw):
    env = dict(os.environ, FASTRNN_NUM_THREADS="1", PYTHONPATH=str(PKG_ROOT))
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------- end to end
def test_train_generate_eval(tmp_path, corpus, capsys):
    r = run(["train", "--corpus", str(corpus), "--epochs", "2", "--out", "m.npz", *TINY,
             "--optimizer", "adam", "--lr", "0.01", "--seed", "3"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "epoch 1/2: train ppl" in out and "epoch 2/2" in out and "val ppl" in out
    assert out.count("  > It was th") == 2                  # a sample after each epoch
    assert "model saved to" in out
    lm = CharLM.load(tmp_path / "m.npz")
    assert len(lm.history) == 2 and lm.hidden_size == 16
    assert lm.info["corpus"] == str(corpus)

    g = run(["generate", "m.npz", "--prefix", "It was", "-n", "40", "--seed", "5"], tmp_path)
    assert g.returncode == 0, g.stderr
    text = g.stdout.rstrip("\n")
    assert text == lm.generate("It was", 40, temperature=0.8, seed=5)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "m.npz"), "--prefix", "It was", "-n", "40",
                 "--seed", "5"]) == 0
    assert capsys.readouterr().out == g.stdout
    for threads in ("1", "2"):
        assert main(["generate", str(tmp_path / "m.npz"), "--prefix", "It was", "-n", "40",
                     "--seed", "5", "--threads", threads]) == 0
        assert capsys.readouterr().out == g.stdout
    assert main(["generate", str(tmp_path / "m.npz"), "-n", "20", "--greedy"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == lm.generate(lm.info["prefix"], 20,
                                                               greedy=True)

    e = run(["eval", "m.npz"], tmp_path)
    assert e.returncode == 0, e.stderr
    assert "perplexity" in e.stdout and "last 0.05" in e.stdout
    ppl = float(e.stdout.split()[1])
    assert ppl == pytest.approx(lm.history[-1]["val_ppl"], rel=1e-4)
    assert main(["eval", str(tmp_path / "m.npz"), "--corpus", str(corpus),
                 "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert float(out.split()[1]) == pytest.approx(lm.perplexity(CORPUS), rel=1e-4)


def test_resume_via_cli_equals_longer_run(tmp_path, corpus):
    common = ["--corpus", str(corpus), *TINY, "--seed", "1", "--sample-length", "0"]
    assert run(["train", *common, "--epochs", "3", "--out", "full.npz"], tmp_path).returncode == 0
    assert run(["train", *common, "--epochs", "1", "--out", "part.npz"], tmp_path).returncode == 0
    r = run(["train", "--resume", "part.npz", "--epochs", "3", "--threads", "1",
             "--no-progress", "--sample-length", "0"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch 1" in r.stdout
    a, b = CharLM.load(tmp_path / "full.npz"), CharLM.load(tmp_path / "part.npz")
    np.testing.assert_array_equal(a.parameters, b.parameters)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_ctrl_c_saves_checkpoint_and_exits_cleanly(tmp_path, corpus):
    env = dict(os.environ, FASTRNN_NUM_THREADS="1", PYTHONPATH=str(PKG_ROOT))
    big = tmp_path / "big.txt"
    big.write_text(CORPUS * 20, encoding="utf-8")
    p = subprocess.Popen([sys.executable, "-m", "fastrnn", "train", "--corpus", str(big),
                          "--epochs", "1000", "--out", "m.npz", *TINY], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()                  # the header: training has started
        assert first.startswith("fastrnn train:"), first
        line = p.stdout.readline()                   # the first epoch finished
        assert line.startswith("epoch 1/1000"), line
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "checkpoint saved to m.npz" in err and "fastrnn train --resume m.npz" in err
    lm = CharLM.load(tmp_path / "m.npz")
    st = lm.training_state
    assert st is not None and st["epoch"] >= 1 and st["step"] > 0
    # and it resumes
    r = run(["train", "--resume", "m.npz", "--epochs", str(st["epoch"] + 1), "--threads", "1",
             "--no-progress", "--sample-length", "0"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert CharLM.load(tmp_path / "m.npz").training_state["epoch"] == st["epoch"] + 1


def test_python_m_fastrnn_help(tmp_path):
    r = run(["--help"], tmp_path)
    assert r.returncode == 0 and "train" in r.stdout and "generate" in r.stdout
    assert "eval" in r.stdout
    r = run(["--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("fastrnn ")


# ---------------------------------------------------------------- help and errors (in process)
@pytest.mark.parametrize("command,options", [
    ("train", ["--corpus", "--preprocess", "--val-fraction", "--hidden", "--nonlinearity",
               "--dtype", "--init", "--steps", "--batch", "--epochs", "--lr", "--optimizer",
               "--clip", "--clip-value", "--sampling", "--threads", "--seed", "--out",
               "--checkpoint", "--resume", "--plot", "--prefix", "--sample-length", "--temperature",
               "--no-progress", "builtin", "time-machine", "Ctrl-C"]),
    ("generate", ["MODEL", "--prefix", "-n", "--temperature", "--top-k", "--greedy",
                  "--seed"]),
    ("eval", ["MODEL", "--corpus", "--preprocess", "--val-fraction", "--batch", "--threads"]),
])
def test_help_is_complete(capsys, command, options):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in options:
        assert opt in out, f"{command} --help does not mention {opt}"
    # every option the parser knows is documented in the help
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        for s in action.option_strings:
            assert s in out


@pytest.mark.parametrize("argv,match", [
    ([], "required: COMMAND"),
    (["fly"], "invalid choice"),
    (["train", "--hidden", "0"], "--hidden: expected a positive integer"),
    (["train", "--hidden", "x"], "--hidden: expected a positive integer"),
    (["train", "--lr", "-1"], "--lr: expected a positive number"),
    (["train", "--lr", "nan"], "--lr: expected a positive number"),
    (["train", "--val-fraction", "1"], r"--val-fraction: expected a number in \[0, 1\)"),
    (["train", "--optimizer", "rmsprop"], "invalid choice"),
    (["train", "--bogus"], "unrecognized arguments"),
    (["generate"], "required: MODEL"),
    (["generate", "m.npz", "-n", "-5"], "expected an integer >= 0"),
    (["generate", "m.npz", "--temperature", "0"], "expected a positive number"),
    (["generate", "m.npz", "--top-k", "0"], "expected a positive integer"),
])
def test_bad_arguments_one_line(capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "error:" in err
    import re
    assert re.search(match, err), err


def test_generate_model_saved_by_library(capsys, tmp_path):
    lm = CharLM("abracadabra", 8, seed=0)       # 'a' is the most frequent character
    lm.save(tmp_path / "m.npz")
    assert main(["generate", str(tmp_path / "m.npz"), "-n", "10", "--seed", "1"]) == 0
    out = capsys.readouterr().out.rstrip("\n")
    assert out == lm.generate("a", 10, temperature=0.8, seed=1)


def test_runtime_errors_one_line(capsys, tmp_path, corpus):
    cases = [
        (["generate", str(tmp_path / "absent.npz")], "no such model file"),
        (["eval", str(corpus)], "not a valid fastrnn model file"),
        (["train", "--corpus", str(tmp_path / "absent.txt")], "neither 'builtin'"),
        (["train", "--corpus", str(tmp_path)], "is a directory"),
        (["train", "--corpus", str(corpus), "--batch", "1000", "--steps", "100",
          "--out", str(tmp_path / "x.npz")], "too short"),
        (["train", "--corpus", str(corpus), "--out", str(tmp_path / "no" / "m.npz")],
         "does not exist"),
        (["train", "--resume", str(tmp_path / "absent.npz")], "no such model file"),
    ]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    cases.append((["train", "--corpus", str(bad)], "not UTF-8"))
    for argv, match in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("fastrnn: error: ") and err.count("\n") == 1, err
        assert match in err, (argv, err)


def test_time_machine_offline_message(capsys, tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("FASTRNN_DATA", str(tmp_path))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["train", "--corpus", "time-machine"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err


def test_plot_without_matplotlib(capsys, monkeypatch, corpus):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import fails
    assert main(["train", "--corpus", str(corpus), "--plot", "c.png", *TINY]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install" in err and err.count("\n") == 1


def test_plot_png(tmp_path, corpus):
    """--plot writes the perplexity curve: a 600x400 PNG with the train line
    (matplotlib's first colour, C0) and the validation line (C1) drawn on it.
    matplotlib is in the `test` extra, so this never skips in CI."""
    import matplotlib.image
    png = tmp_path / "curve.png"
    assert main(["train", "--corpus", str(corpus), "--epochs", "3", "--out",
                 str(tmp_path / "m.npz"), "--plot", str(png), *TINY]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(str(png))[..., :3]
    assert img.shape[:2] == (400, 600), img.shape          # figsize (6, 4) at 100 dpi
    assert len(CharLM.load(tmp_path / "m.npz").history) == 3
    for name, rgb in (("train (C0)", (0x1f, 0x77, 0xb4)), ("validation (C1)",
                                                           (0xff, 0x7f, 0x0e))):
        near = (np.abs(img * 255 - np.array(rgb)) < 30).all(axis=2)
        assert near.sum() > 200, f"no {name} line in the plot ({near.sum()} pixels)"


def test_diverged_training_exit_code(capsys, tmp_path, corpus):
    code = main(["train", "--corpus", str(corpus), "--optimizer", "sgd", "--lr", "1e38",
                 "--clip", "0", "--epochs", "3", "--out", str(tmp_path / "m.npz"), *TINY])
    assert code == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err


def test_in_process_train_d2l_preprocessing(capsys, tmp_path, corpus):
    assert main(["train", "--corpus", str(corpus), "--preprocess", "d2l", "--epochs", "1",
                 "--out", str(tmp_path / "m.npz"), "--sampling", "windows", *TINY]) == 0
    lm = CharLM.load(tmp_path / "m.npz")
    assert lm.vocab.tokens[0] == "<unk>"
    assert set(lm.vocab.tokens[1:]) <= set("abcdefghijklmnopqrstuvwxyz ")


@pytest.mark.skipif(not SHARED_TM.is_file(), reason=f"{SHARED_TM} not present")
def test_d2l_example_smoke(tmp_path):
    env = dict(os.environ, FASTRNN_NUM_THREADS="1", PYTHONPATH=str(PKG_ROOT))
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "d2l_time_machine.py"),
                        "--data-dir", str(SHARED_TM.parent), "--epochs", "1", "--no-progress",
                        "--json", str(out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    import json
    res = json.loads(out.read_text())
    assert [x["vocab_size"] for x in res] == [28, 28]
    assert res[0]["train_windows"] == 10_000 and res[0]["val_windows"] == 5_000
    assert res[1]["tokens"] == 10_000
    assert all(x["greedy"].startswith("time traveller") for x in res)

"""Write the format-version-1 model files in this folder (run with fastrnn 0.1.0).

These files pin the upgrade path: fastrnn 0.1.0 (checkpoint format version 1)
wrote them, and tests/test_checkpoint_v1.py checks that today's code loads them,
generates the same text, measures the same perplexity and resumes training to
the same parameters as 0.1.0 did. Kept for the record; rerunning it with a
newer fastrnn would write version-2 files, which is not what the tests need.

    cd tests/data && python make_v1_files.py    # with fastrnn 0.1.0 installed
"""
import json
import os
import signal

import numpy as np

import fastrnn
from fastrnn import CharLM, Vocab
from fastrnn import model as model_mod
from fastrnn.model import TrainingInterrupted

assert fastrnn.__version__ == "0.1.0", fastrnn.__version__
os.environ["FASTRNN_NUM_THREADS"] = "1"

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a "
        "recondite matter to us his grey eyes shone and twinkled and his usually pale face "
        "was flushed and animated ") * 3
VAL = TEXT[:120]
PREFIX = "the time "
expect = {"fastrnn_version": fastrnn.__version__, "text": TEXT, "val_text": VAL,
          "prefix": PREFIX, "files": {}}


def record(name, lm, **extra):
    gen = {
        "sample_seed3": lm.generate(PREFIX, 60, seed=3),
        "sample_seed3_t07_k5": lm.generate(PREFIX, 60, seed=3, temperature=0.7, top_k=5),
        "greedy": lm.generate(PREFIX, 60, greedy=True),
        "stream_seed5": "".join(lm.stream(PREFIX, 40, seed=5, chunk_size=7)),
        "perplexity": lm.perplexity(VAL),
    }
    expect["files"][name] = gen | extra


# 1. inference-only float32 tanh model, briefly trained, a reserved token
lm = CharLM(Vocab(TEXT, reserved_tokens=["<pad>"]), 8, seed=0)
lm.fit(TEXT, epochs=2, batch_size=4, num_steps=8, lr=0.02, optimizer="adam",
       progress=False, seed=1)
lm.info = {"corpus": "test", "note": "written by fastrnn 0.1.0"}
lm.save("v1_tanh_f32.npz", training_state=False)
record("v1_tanh_f32.npz", lm)

# 2. float64 relu, Adam, checkpoint after epoch 1 of 3 (training state, no carried state)
#    and the same run continued to epoch 3 by fastrnn 0.1.0
kw = dict(batch_size=4, num_steps=8, lr=0.01, optimizer="adam", sampling="random",
          progress=False, seed=7, num_threads=1)
lm = CharLM(Vocab(TEXT), 6, nonlinearity="relu", dtype="float64", seed=2, init="uniform")
lm.fit(TEXT, val_text=VAL, epochs=1, checkpoint="v1_relu_f64_adam_ckpt.npz", **kw)
record("v1_relu_f64_adam_ckpt.npz", CharLM.load("v1_relu_f64_adam_ckpt.npz"),
       resume=dict(kw, epochs=3))
lm = CharLM.load("v1_relu_f64_adam_ckpt.npz")
lm.fit(TEXT, val_text=VAL, epochs=3, resume=True, **kw)
expect["files"]["v1_relu_f64_adam_ckpt.npz"]["resumed_parameters"] = lm.parameters.tolist()
expect["files"]["v1_relu_f64_adam_ckpt.npz"]["resumed_history"] = [
    {k: r[k] for k in ("epoch", "step", "train_loss", "val_loss")} for r in lm.history]

# 3. float64 tanh, SGD, interrupted mid-epoch (sequential sampling: a carried state h_carry)
kw = dict(batch_size=3, num_steps=6, lr=0.5, optimizer="sgd", sampling="sequential",
          progress=False, seed=11, num_threads=1)
real = model_mod.loss_and_grad
n = {"k": 0}


def interrupting(*a, **k):
    n["k"] += 1
    if n["k"] == 5:
        os.kill(os.getpid(), signal.SIGINT)
    return real(*a, **k)


model_mod.loss_and_grad = interrupting
lm = CharLM(Vocab(TEXT), 5, dtype="float64", seed=4)
try:
    lm.fit(TEXT, epochs=2, checkpoint="v1_tanh_f64_sgd_interrupted.npz", **kw)
    raise SystemExit("expected an interrupt")
except TrainingInterrupted:
    pass
model_mod.loss_and_grad = real
lm = CharLM.load("v1_tanh_f64_sgd_interrupted.npz")
assert lm._train["h_carry"] is not None
record("v1_tanh_f64_sgd_interrupted.npz", lm, resume=dict(kw, epochs=2))
lm.fit(TEXT, epochs=2, resume=True, **kw)
f = expect["files"]["v1_tanh_f64_sgd_interrupted.npz"]
f["resumed_parameters"] = lm.parameters.tolist()
f["resumed_history"] = [{k: r[k] for k in ("epoch", "step", "train_loss", "val_loss")}
                        for r in lm.history]

# 4. adagrad float32 checkpoint at an epoch end
kw = dict(batch_size=4, num_steps=8, lr=0.1, optimizer="adagrad", sampling="windows",
          progress=False, seed=5, num_threads=1)
lm = CharLM(Vocab(TEXT), 4, seed=6)
lm.fit(TEXT[:200], epochs=1, checkpoint="v1_tanh_f32_adagrad_ckpt.npz", **kw)
record("v1_tanh_f32_adagrad_ckpt.npz", CharLM.load("v1_tanh_f32_adagrad_ckpt.npz"))

with open("v1_expected.json", "w") as fh:
    json.dump(expect, fh, indent=1, ensure_ascii=False)
print({k: os.path.getsize(k) for k in sorted(os.listdir(".")) if k.endswith(".npz")})

#!/usr/bin/env python
"""
d2l's two char-RNN runs, in full
================================

Reproduce d2l.ai's two published char-RNN runs on H. G. Wells' *The Time Machine*
(this script is not run when the documentation is built; the first run, with fewer
epochs, is the example "d2l's char-RNN on *The Time Machine*").

1. ``current``: the current edition (d2l.ai, "Recurrent Neural Network
   Implementation from Scratch"): d2l's preprocessing (every run of non-letters
   to one space, lowercase), stride-1 windows of 32 characters, the first
   10,000 windows for training and the next 5,000 for validation, hidden size
   32, batch 1024, SGD with lr 1, gradient clipping at norm 1, 100 epochs,
   hidden state reset for every minibatch. d2l reports a validation
   perplexity of about 7.4 (PyTorch) / 7.3 (TensorFlow).
2. ``classic``: the classic edition (d2l 0.17, section 8.5): the text
   preprocessed line by line and the lines concatenated, the first 10,000
   characters, sequential partitioning (batch 32, 35 steps, state carried
   across minibatches and reset each epoch), hidden size 512, SGD with lr 1,
   clipping at 1, 500 epochs. d2l reports a training perplexity of 1.0 and
   ``predict('time traveller')`` (greedy, 50 characters) producing Wells-like text.

The text comes from :func:`fastrnn.datasets.time_machine`: from the cache
directory (``--data-dir``, else ``$FASTRNN_DATA``, else ``~/.cache/fastrnn``),
downloading it once from d2l's data hub if it is not there.

Usage::

    python examples/d2l_time_machine.py                       # both runs
    python examples/d2l_time_machine.py --run current --data-dir /path/with/timemachine.txt
    python examples/d2l_time_machine.py --run classic --epochs 50 --json result.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

from fastrnn import CharLM, Vocab, datasets

PREFIX = "time traveller"


def current_edition_corpus(raw: str) -> tuple[Vocab, np.ndarray, np.ndarray]:
    """d2l's TimeMachine data module: (vocab, train ids, val ids).

    ``windows(train, 32)`` gives exactly the first 10,000 stride-1 windows and
    ``windows(val, 32)`` the next 5,000, as d2l's ``num_train``/``num_val``.
    """
    text = datasets.preprocess(raw, "d2l")         # re.sub('[^A-Za-z]+', ' ', text).lower()
    vocab = Vocab(text)
    ids = vocab.encode(text)
    T, n_train, n_val = 32, 10_000, 5_000
    return vocab, ids[: n_train + T], ids[n_train: n_train + n_val + T]


def classic_edition_corpus(raw: str) -> tuple[Vocab, np.ndarray]:
    """d2l 0.17's ``load_corpus_time_machine(max_tokens=10000)``: (vocab, ids)."""
    lines = [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in raw.splitlines()]
    text = "".join(lines)                          # tokens of all lines, concatenated
    vocab = Vocab(text)
    return vocab, vocab.encode(text)[:10_000]


def run_current(raw, *, epochs, threads, seed, progress):
    vocab, train, val = current_edition_corpus(raw)
    lm = CharLM(vocab, 32, seed=seed)
    t0 = time.perf_counter()
    hist = lm.fit(train, val_text=val, epochs=epochs, batch_size=1024, num_steps=32, lr=1.0,
                  optimizer="sgd", clip=1.0, sampling="windows", num_threads=threads,
                  progress=progress, seed=seed)
    wall = time.perf_counter() - t0
    return {
        "run": "current edition (hidden 32, batch 1024, 32 steps, lr 1, windows)",
        "epochs": len(hist), "vocab_size": len(vocab), "train_windows": len(train) - 32,
        "val_windows": len(val) - 32,
        "train_ppl": hist[-1]["train_ppl"], "val_ppl": hist[-1]["val_ppl"],
        "d2l_reported": "validation perplexity 7.4 (PyTorch) / 7.3 (TensorFlow)",
        "greedy": lm.generate(PREFIX, 50, greedy=True),
        "sampled": lm.generate(PREFIX, 50, temperature=0.7, seed=seed),
        "wall_time_s": wall,
        "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in hist])),
    }


def run_classic(raw, *, epochs, threads, seed, progress):
    vocab, ids = classic_edition_corpus(raw)
    lm = CharLM(vocab, 512, seed=seed)
    t0 = time.perf_counter()
    hist = lm.fit(ids, epochs=epochs, batch_size=32, num_steps=35, lr=1.0, optimizer="sgd",
                  clip=1.0, sampling="sequential", num_threads=threads, progress=progress,
                  seed=seed)
    wall = time.perf_counter() - t0
    return {
        "run": "classic edition (hidden 512, batch 32, 35 steps, lr 1, sequential, "
               "first 10,000 characters)",
        "epochs": len(hist), "vocab_size": len(vocab), "tokens": int(len(ids)),
        "train_ppl": hist[-1]["train_ppl"],
        "d2l_reported": "training perplexity 1.0",
        "greedy": lm.generate(PREFIX, 50, greedy=True),     # d2l's predict_ch8
        "sampled": lm.generate(PREFIX, 50, temperature=0.7, seed=seed),
        "wall_time_s": wall,
        "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in hist])),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", choices=("current", "classic", "both"), default="both")
    ap.add_argument("--data-dir", default=None,
                    help="directory holding timemachine.txt (sets FASTRNN_DATA)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="override the number of epochs (default: d2l's 100 / 500)")
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write results here")
    args = ap.parse_args(argv)
    if args.data_dir:
        os.environ["FASTRNN_DATA"] = args.data_dir
    try:
        raw = datasets.time_machine()
    except (datasets.DatasetUnavailableError, datasets.ChecksumMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kw = dict(threads=args.threads, seed=args.seed, progress=not args.no_progress)
    results = []
    if args.run in ("current", "both"):
        results.append(run_current(raw, epochs=args.epochs or 100, **kw))
    if args.run in ("classic", "both"):
        results.append(run_classic(raw, epochs=args.epochs or 500, **kw))
    for r in results:
        print(f"\n== {r['run']}")
        print(f"   after {r['epochs']} epochs: train perplexity {r['train_ppl']:.3f}"
              + (f", validation perplexity {r['val_ppl']:.3f}" if "val_ppl" in r else "")
              + f"  (d2l: {r['d2l_reported']})")
        print(f"   wall time {r['wall_time_s']:.1f} s, {r['tokens_per_s']:,.0f} tokens/s")
        print(f"   greedy : {r['greedy']!r}")
        print(f"   sampled: {r['sampled']!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

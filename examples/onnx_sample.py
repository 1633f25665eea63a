#!/usr/bin/env python
"""
Sampling with ONNX Runtime alone
================================

Sample text from an exported fastrnn model with ONNX Runtime alone (no fastrnn; this
script is not run when the documentation is built, see the interop page).

Export a model first (``pip install 'fastrnn[onnx]'``)::

    fastrnn train --out model.npz
    fastrnn export model.npz model.onnx

then, on any machine with only ``numpy`` and ``onnxruntime``::

    python examples/onnx_sample.py model.onnx --prefix "The " -n 300 --temperature 0.8

The model's inputs are ``ids`` (batch, time) int64 and the initial state ``h0``
(layers, batch, hidden) float32 (plus ``c0`` for an LSTM); its outputs are
``logits`` (batch, time, vocab) and the final state ``hT`` (``cT``), which is fed
back as the next call's ``h0`` (``c0``). The vocabulary (the tokens in id order)
is the JSON list in the metadata key ``fastrnn.vocab``.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("model", help="an .onnx file written by 'fastrnn export'")
    ap.add_argument("--prefix", default="The ", help="text to start from (default: 'The ')")
    ap.add_argument("-n", "--length", type=int, default=300, help="characters to sample")
    ap.add_argument("--temperature", type=float, default=0.8,
                    help="sampling temperature, > 0 (default: 0.8)")
    ap.add_argument("--greedy", action="store_true", help="always take the likeliest")
    ap.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    args = ap.parse_args(argv)

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    tokens = json.loads(meta["fastrnn.vocab"])
    unk = json.loads(meta.get("fastrnn.unk", "null"))
    index = {t: i for i, t in enumerate(tokens)}
    L, H = int(meta["fastrnn.num_layers"]), int(meta["fastrnn.hidden_size"])
    lstm = any(i.name == "c0" for i in sess.get_inputs())

    ids = []
    for ch in args.prefix:
        if ch in index:
            ids.append(index[ch])
        elif unk is not None:
            ids.append(index[unk])
        else:
            sys.exit(f"error: {ch!r} is not in the model's vocabulary")
    if not ids:
        sys.exit("error: --prefix must not be empty")

    state = {"h0": np.zeros((L, 1, H), np.float32)}      # zeros to start, batch of 1
    if lstm:
        state["c0"] = np.zeros((L, 1, H), np.float32)

    def step(x):
        """Feed ids x (one sequence); return the last logits, keep the new state."""
        out = sess.run(None, {"ids": np.array([x], np.int64), **state})
        state["h0"] = out[1]
        if lstm:
            state["c0"] = out[2]
        return out[0][0, -1].astype(np.float64)

    rng = np.random.default_rng(args.seed)
    out = sys.stdout
    out.write(args.prefix)
    logits = step(ids)                                   # the whole prefix in one call
    for _ in range(args.length):
        if args.greedy:
            nxt = int(np.argmax(logits))
        else:
            z = logits / args.temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        out.write(tokens[nxt])
        logits = step([nxt])
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

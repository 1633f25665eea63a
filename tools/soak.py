#!/usr/bin/env python
"""Soak test (not run in CI): train a char-LM on tinyshakespeare for a long time
through repeated interruptions, and report whether loss, memory and throughput
stay healthy.

The run is cut into segments. Each segment is a fresh process that loads the
checkpoint (or starts a new model) and trains with ``fit(checkpoint=...,
resume=True)``; the driver ends it with SIGINT (a user's Ctrl-C: fit finishes
the minibatch, saves, raises TrainingInterrupted) or, every third segment, with
SIGKILL (a crash: the last epoch-end checkpoint must still load). Meanwhile the
driver samples the child's resident memory every second. At the end it prints
and writes (``report.json`` in --out):

* the loss curve: train loss and validation perplexity per epoch;
* throughput per epoch (tokens/s) and its spread;
* resident memory per segment: after warm-up, at the end, the peak, and the
  growth rate after warm-up (MB/min), which a leak would make positive;
* interrupts and resumes: every checkpoint loaded, training state continuous
  (epochs never go backwards, steps only advance).

Usage::

    python tools/soak.py                      # 30 minutes, the issue's soak
    python tools/soak.py --minutes 2          # a quick version
    python tools/soak.py --minutes 30 --segment-seconds 120 --hidden 256 --threads 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

CHILD = r'''
import json, os, sys, time
import numpy as np
from fastrnn import CharLM
from fastrnn.model import TrainingInterrupted

cfg = json.loads(sys.argv[1])
text = open(cfg["data"], encoding="utf-8").read()
n_val = int(len(text) * cfg["val_fraction"])
train, val = text[:-n_val], text[-n_val:]
ck = cfg["checkpoint"]

def emit(kind, **kw):
    print(json.dumps({"kind": kind, "t": time.time(), **kw}), flush=True)

if os.path.exists(ck):
    lm = CharLM.load(ck)
    st = lm.training_state
    emit("resumed", epoch=st["epoch"], batch=st["batch"], step=st["step"])
    resume = True
else:
    lm = CharLM(text, hidden_size=cfg["hidden"], seed=cfg["seed"])
    emit("started")
    resume = False

def on_epoch(model, rec):
    emit("epoch", **rec)

try:
    lm.fit(train, val_text=val, epochs=10**6, batch_size=cfg["batch"],
           num_steps=cfg["steps"], lr=cfg["lr"], optimizer="adam", clip=1.0,
           sampling="sequential", num_threads=cfg["threads"], progress=False,
           checkpoint=ck, resume=resume, callbacks=[on_epoch], seed=cfg["seed"])
except TrainingInterrupted as exc:
    st = lm.training_state
    emit("interrupted", epoch=st["epoch"], batch=st["batch"], step=st["step"],
         finite=bool(np.isfinite(lm.parameters).all()))
    sys.exit(130)
'''


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_segment(cfg: dict, seconds: float, kill: bool, env: dict) -> dict:
    """One child process: train for ``seconds``, then SIGINT (or SIGKILL)."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events, rss, err_lines = [], [], []
    t0 = time.time()

    def reader():
        for line in p.stdout:
            try:
                events.append(json.loads(line))
            except ValueError:
                pass

    def err_reader():
        for line in p.stderr:
            err_lines.append(line)

    threads = [threading.Thread(target=reader, daemon=True),
               threading.Thread(target=err_reader, daemon=True)]
    for th in threads:
        th.start()
    while p.poll() is None and time.time() - t0 < seconds:
        r = rss_mb(p.pid)
        if r is not None:
            rss.append((time.time() - t0, r))
        time.sleep(1.0)
    signal_name = "none (exited by itself)"
    if p.poll() is None:
        p.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        signal_name = "SIGKILL" if kill else "SIGINT"
    try:
        p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    for th in threads:
        th.join(timeout=10)
    return {"signal": signal_name, "returncode": p.returncode, "events": events, "rss": rss,
            "seconds": time.time() - t0, "stderr": "".join(err_lines)[-2000:]}


def slope_mb_per_min(samples: list[tuple[float, float]], skip_s: float) -> float | None:
    pts = [(t, r) for t, r in samples if t >= skip_s]
    if len(pts) < 5:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mr = sum(r for _, r in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return 60 * sum((t - mt) * (r - mr) for t, r in pts) / var


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--segment-seconds", type=float, default=None,
                    help="length of one process's training (default: minutes*60/8, "
                         "at least 30 s)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default="/tmp/fastrnn-soak")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-seconds", type=float, default=10.0,
                    help="memory samples before this point of a segment are not used "
                         "for its growth rate")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ck = out / "soak.npz"
    for stale in [ck, *out.glob(".soak.npz.*.tmp")]:
        stale.unlink(missing_ok=True)
    total = args.minutes * 60
    seg = args.segment_seconds or max(30.0, total / 8)
    threads = args.threads or len(os.sched_getaffinity(0))
    cfg = {"data": args.data, "checkpoint": str(ck), "hidden": args.hidden,
           "batch": args.batch, "steps": args.steps, "lr": args.lr, "threads": threads,
           "val_fraction": args.val_fraction, "seed": args.seed}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]]
                                                       if env.get("PYTHONPATH") else []))
    print(f"soak: {args.minutes:g} min on {args.data}, H={args.hidden} B={args.batch} "
          f"T={args.steps} adam lr={args.lr} threads={threads}; segments of {seg:.0f} s; "
          f"checkpoint {ck}", flush=True)

    t_start = time.time()
    segments, problems = [], []
    epochs, last_step, last_epoch = [], -1, -1
    i = 0
    while time.time() - t_start < total - 5:
        remaining = total - (time.time() - t_start)
        kill = i % 3 == 2
        r = run_segment(cfg, min(seg, remaining), kill, env)
        i += 1
        ev = r["events"]
        seg_epochs = [e for e in ev if e["kind"] == "epoch"]
        epochs.extend(seg_epochs)
        start = next((e for e in ev if e["kind"] in ("resumed", "started")), None)
        end = next((e for e in ev if e["kind"] == "interrupted"), None)
        # continuity: a resumed state never goes back past what was saved
        if start is None:
            problems.append(f"segment {i}: the child never started ({r['stderr'][-500:]})")
        elif start["kind"] == "resumed":
            if start["epoch"] < last_epoch or start["step"] < 0:
                problems.append(f"segment {i}: resumed at epoch {start['epoch']} after "
                                f"epoch {last_epoch} had completed")
        if r["signal"] == "SIGINT" and (r["returncode"] != 130 or end is None
                                        or not end["finite"]):
            problems.append(f"segment {i}: Ctrl-C did not end cleanly (exit "
                            f"{r['returncode']}): {r['stderr'][-500:]}")
        if r["signal"] == "SIGKILL" and r["returncode"] != -signal.SIGKILL:
            problems.append(f"segment {i}: SIGKILL gave exit {r['returncode']}")
        if "Traceback" in r["stderr"] and r["signal"] != "SIGKILL":
            problems.append(f"segment {i}: traceback: {r['stderr'][-800:]}")
        if seg_epochs:
            last_epoch = max(last_epoch, seg_epochs[-1]["epoch"])
            if seg_epochs[-1]["step"] <= last_step:
                problems.append(f"segment {i}: step went back to {seg_epochs[-1]['step']}")
            last_step = seg_epochs[-1]["step"]
        rss = [x for _, x in r["rss"]]
        after = [x for t, x in r["rss"] if t >= args.warmup_seconds]
        info = {
            "segment": i, "signal": r["signal"], "returncode": r["returncode"],
            "seconds": round(r["seconds"], 1),
            "resumed_at": None if start is None or start["kind"] != "resumed" else
            {k: start[k] for k in ("epoch", "batch", "step")},
            "interrupted_at": None if end is None else
            {k: end[k] for k in ("epoch", "batch", "step")},
            "epochs_completed": [e["epoch"] for e in seg_epochs],
            "rss_mb_after_warmup": round(after[0], 1) if after else None,
            "rss_mb_end": round(rss[-1], 1) if rss else None,
            "rss_mb_peak": round(max(rss), 1) if rss else None,
            "rss_growth_mb_per_min": (None if (s := slope_mb_per_min(r["rss"],
                                                                     args.warmup_seconds))
                                      is None else round(s, 2)),
        }
        segments.append(info)
        pos = lambda d: "new" if d is None else f"{d['epoch']}/{d['batch']}"  # noqa: E731
        print(f"  segment {i:2d}: from {pos(info['resumed_at']):>8s} to "
              f"{pos(info['interrupted_at']) if end else '(killed)':>8s} (epoch/batch), "
              f"{r['signal']:7s} exit {r['returncode']:4d}, "
              f"{info['seconds']:5.0f} s, epochs done {info['epochs_completed'] or '-'}, "
              f"RSS {info['rss_mb_after_warmup']} -> {info['rss_mb_end']} MB "
              f"(peak {info['rss_mb_peak']}, {info['rss_growth_mb_per_min']} MB/min)",
              flush=True)

    # the checkpoint left at the end loads and generates
    sys.path.insert(0, str(REPO))
    from fastrnn import CharLM
    final = CharLM.load(ck)
    sample = final.generate("ROMEO:", 200, seed=0, temperature=0.7)

    # report
    tps = [e["tokens_per_s"] for e in epochs]
    loss = [(e["epoch"], e["train_loss"], e.get("val_ppl")) for e in epochs]
    growths = [s["rss_growth_mb_per_min"] for s in segments
               if s["rss_growth_mb_per_min"] is not None]
    report = {
        "config": cfg, "minutes": args.minutes, "segments": segments,
        "epochs": [{k: e[k] for k in ("epoch", "step", "train_loss", "train_ppl", "val_ppl",
                                      "tokens_per_s", "wall_time")} for e in epochs],
        "throughput": None if not tps else {
            "mean": statistics.mean(tps), "min": min(tps), "max": max(tps),
            "cv": statistics.pstdev(tps) / statistics.mean(tps)},
        "rss_growth_mb_per_min": growths,
        "final": {"epoch": final.training_state["epoch"], "step": final.training_state["step"],
                  "sample": sample},
        "problems": problems,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))

    print("\nloss curve (epoch: train loss, val perplexity):")
    for ep, tl, vp in loss:
        print(f"  {ep:4d}: {tl:.4f}  {vp if vp is None else round(vp, 3)}")
    if tps:
        t = report["throughput"]
        print(f"throughput: mean {t['mean']:,.0f} tok/s, min {t['min']:,.0f}, "
              f"max {t['max']:,.0f}, spread (CV) {100 * t['cv']:.1f}%")
    if growths:
        print(f"RSS growth after warm-up, per segment (MB/min): {growths}")
    print(f"final checkpoint: epoch {report['final']['epoch']}, step "
          f"{report['final']['step']}; sample:\n{sample}\n")
    if len(loss) >= 2 and not loss[-1][1] < loss[0][1]:
        problems.append("the training loss did not decrease")
    if any(not math.isfinite(tl) for _, tl, _ in loss):
        problems.append("non-finite training loss")
    if growths and max(growths) > 5:
        problems.append(f"resident memory grows by up to {max(growths)} MB/min in a segment")
    print("problems:", "none" if not problems else "")
    for p in problems:
        print("  -", p)
    print(f"report: {out / 'report.json'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

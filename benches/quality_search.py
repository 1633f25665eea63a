"""Short quality search on tiny-shakespeare (nanoGPT split, block loss of 256 chars).

Each candidate first times a few steps to size its cosine horizon to the budget, then
trains for ``--budget`` seconds of wall time (evaluation included) and reports the
validation loss over all 256-character blocks of the last 10%, each from a zero state.
Writes one JSON line per run to ``--out``. Timings depend on the machine's load.

    python benches/quality_search.py --budget 60 --out benches/results/search.jsonl

With ``--max-steps N`` a candidate instead trains for exactly N steps (no timing probe,
no time budget), its cosine schedule sized to that horizon, and evaluates on ALL the
256-character validation blocks every ``--eval-interval`` steps: the record's "curve"
holds (step, tokens, train loss, val block-256 loss) at each evaluation, so candidates
compare at a fixed number of tokens whatever the machine's load. ``--partial FILE``
appends the curve so far after every epoch (to keep the figures of a run cut short).

    python benches/quality_search.py gru256x2_d02 --max-steps 3000 --eval-interval 500 \
        --threads 2 --out benches/results/quality_search_steps.jsonl
"""
import argparse
import json
import math
import os
import platform
import time

from fastrnn import CharLM, TrainConfig, Vocab, datasets

CANDIDATES = {
    "gru256": dict(cell="gru", hidden=256, layers=1, lr=4e-3),
    "lstm256": dict(cell="lstm", hidden=256, layers=1, lr=4e-3),
    "rnn256": dict(cell="rnn", hidden=256, layers=1, lr=2e-3),
    "gru384": dict(cell="gru", hidden=384, layers=1, lr=3e-3),
    "gru192x2": dict(cell="gru", hidden=192, layers=2, lr=4e-3),
    "gru256_lr8e-3": dict(cell="gru", hidden=256, layers=1, lr=8e-3),
    "gru128_lr8e-3": dict(cell="gru", hidden=128, layers=1, lr=8e-3),
    "gru192_lr8e-3": dict(cell="gru", hidden=192, layers=1, lr=8e-3),
    "gru128_lr15e-3": dict(cell="gru", hidden=128, layers=1, lr=1.5e-2),
    # issue 13's 30-minute row: wider / stacked models with dropout between layers
    "gru256_lr8e-3_wd01": dict(cell="gru", hidden=256, layers=1, lr=8e-3, wd=0.1),
    "gru256x2_d02": dict(cell="gru", hidden=256, layers=2, lr=8e-3, dropout=0.2),
    "gru256x2_d03": dict(cell="gru", hidden=256, layers=2, lr=8e-3, dropout=0.3),
    "gru384x2_d03": dict(cell="gru", hidden=384, layers=2, lr=6e-3, dropout=0.3),
    "lstm384x2_d03": dict(cell="lstm", hidden=384, layers=2, lr=6e-3, dropout=0.3),
    "lstm512x2_d03": dict(cell="lstm", hidden=512, layers=2, lr=4e-3, dropout=0.3),
    "lstm512x2_d05": dict(cell="lstm", hidden=512, layers=2, lr=4e-3, dropout=0.5),
    "gru512": dict(cell="gru", hidden=512, layers=1, lr=5e-3),
}


def run(name, budget, batch, steps, seed=0, out=None, checkpoint=None):
    c = CANDIDATES[name]
    text = datasets.tiny_shakespeare()
    vocab = Vocab(text)
    ids = vocab.encode(text)
    tr, va = datasets.nanogpt_split(ids)
    lm = CharLM(vocab, c["hidden"], cell=c["cell"], num_layers=c["layers"], seed=seed)
    probe = CharLM(vocab, c["hidden"], cell=c["cell"], num_layers=c["layers"], seed=seed)
    t0 = time.perf_counter()
    probe.fit(tr[: batch * steps * 12 + steps], epochs=1, batch_size=batch, num_steps=steps,
              optimizer="adamw", lr=c["lr"], progress=False, seed=seed)
    sps = probe.history[0]["step"] / (time.perf_counter() - t0)
    max_steps = max(50, int(sps * budget * 0.93))
    cfg = TrainConfig(epochs=100, batch_size=batch, num_steps=steps, optimizer="adamw",
                      lr=c["lr"], weight_decay=0.01, schedule="cosine",
                      warmup_steps=min(100, max_steps // 10), max_steps=max_steps,
                      time_budget=budget, eval_interval=max(1, max_steps // 6),
                      eval_blocks=64, progress=False, seed=seed, checkpoint=checkpoint,
                      keep_best=checkpoint is not None)
    t0 = time.perf_counter()
    lm.fit(tr, val_text=va, config=cfg)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    block = math.log(lm.perplexity(va, block=256))
    stream = math.log(lm.perplexity(va, batch_size=16))
    rec = {"name": name, **c, "batch": batch, "steps": steps, "optimizer": "adamw",
           "schedule": "cosine", "budget_s": budget, "train_wall_s": round(wall, 1),
           "max_steps": max_steps, "steps_done": lm.training_state["step"],
           "tokens": lm.training_state["step"] * batch * steps,
           "val_block256_nats": round(block, 4), "val_stream16_nats": round(stream, 4),
           "final_eval_s": round(time.perf_counter() - t1, 1),
           "evals": [{k: r[k] for k in ("step", "val_loss", "train_loss", "wall_time")}
                     for r in lm.eval_history],
           "machine": f"{platform.machine()}, {os.cpu_count()} cores SHARED with other "
                      "jobs (timings not representative)"}
    print(json.dumps(rec), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return rec


def run_steps(name, max_steps, batch, steps, eval_interval, threads=None, seed=0, out=None,
              partial=None, warmup=100):
    """Exactly ``max_steps`` steps, cosine sized to them, all-block evaluations."""
    c = CANDIDATES[name]
    text = datasets.tiny_shakespeare()
    vocab = Vocab(text)
    tr, va = datasets.nanogpt_split(vocab.encode(text))
    lm = CharLM(vocab, c["hidden"], cell=c["cell"], num_layers=c["layers"],
                dropout=c.get("dropout", 0.0), seed=seed)
    wd = c.get("wd", 0.01)

    def curve(model):
        return [{"step": r["step"], "tokens": r["tokens_seen"],
                 "train_loss": None if r["train_loss"] is None else round(r["train_loss"], 4),
                 "val_block256_nats": round(r["val_loss"], 4),
                 "wall_s": round(r["wall_time"], 1)} for r in model.eval_history]

    def dump_partial(model, rec):
        if partial:
            with open(partial, "a") as f:
                f.write(json.dumps({"name": name, "partial": True, "max_steps": max_steps,
                                    "curve": curve(model)}) + "\n")

    cfg = TrainConfig(epochs=10_000, batch_size=batch, num_steps=steps, optimizer="adamw",
                      lr=c["lr"], weight_decay=wd, schedule="cosine", warmup_steps=warmup,
                      max_steps=max_steps, eval_interval=eval_interval, eval_blocks=None,
                      progress=False, seed=seed, num_threads=threads)
    t0 = time.perf_counter()
    lm.fit(tr, val_text=va, config=cfg, callbacks=[dump_partial])
    wall = time.perf_counter() - t0
    block = math.log(lm.perplexity(va, block=256))
    n_params = int(lm._flat.size)
    rec = {"name": name, **c, "weight_decay": wd, "batch": batch, "steps": steps,
           "optimizer": "adamw", "schedule": f"cosine, {warmup} warm-up steps, to lr/10",
           "max_steps": max_steps, "steps_done": lm.training_state["step"],
           "tokens": lm.training_state["step"] * batch * steps, "params": n_params,
           "val_block256_nats": round(block, 4), "curve": curve(lm),
           "threads": threads, "train_wall_s": round(wall, 1),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores SHARED with other "
                      "jobs, run at nice 19 (timings not representative)"}
    print(json.dumps(rec), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return rec


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", default=["gru256", "lstm256", "rnn256"])
    ap.add_argument("--budget", type=float, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--max-steps", type=int, default=None,
                    help="fixed horizon (steps) instead of a time budget")
    ap.add_argument("--eval-interval", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--partial", default=None)
    a = ap.parse_args()
    for n in a.names:
        if a.max_steps:
            run_steps(n, a.max_steps, a.batch, a.steps, a.eval_interval, threads=a.threads,
                      out=a.out, partial=a.partial)
            continue
        run(n, a.budget, a.batch, a.steps, out=a.out, checkpoint=a.checkpoint)

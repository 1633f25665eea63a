"""The ``fastrnn`` command: train, generate and evaluate character-level language models.

::

    fastrnn train                       # built-in corpus, about a minute on 2 cores
    fastrnn generate model.npz --prefix "The " -n 300
    fastrnn eval model.npz --corpus builtin --val-fraction 0.05

Bad arguments and expected failures (missing files, corrupted models, a
corpus that is too short) print one line on stderr and exit with status 2;
a diverged training run exits with 1; Ctrl-C during training saves a
checkpoint and exits with 130.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser", "TRAIN_DEFAULTS"]

# Defaults of `fastrnn train`, chosen so that the built-in corpus trains in about a
# minute on 2 cores and prints readable samples (measured; see the README).
TRAIN_DEFAULTS = {
    "hidden": 256,
    "init": "uniform",
    "steps": 32,
    "batch": 32,
    "epochs": 15,
    "optimizer": "adam",
    "clip": 1.0,
    "sampling": "sequential",
    "val_fraction": 0.05,
    "seed": 0,
    "out": "model.npz",
    "sample_length": 200,
    "temperature": 0.8,
}
DEFAULT_LR = {"sgd": 1.0, "adagrad": 0.1, "adam": 0.003, "adamw": 0.003}
# Named settings (``--preset NAME``); explicit flags override them. The search behind
# them is benches/quality_search.md.
PRESETS = {
    "shakespeare": {
        "corpus": "shakespeare", "cell": "gru", "layers": 1, "hidden": 128, "batch": 32,
        "steps": 64, "optimizer": "adamw", "lr": 0.015, "weight_decay": 0.01,
        "schedule": "cosine", "warmup_steps": 100, "max_steps": 1800, "time_budget": 180.0,
        "clip": 1.0, "eval_interval": 200, "eval_blocks": 64, "keep_best": True,
        "epochs": 100,
    },
    # issue 13's 30-minute row: 2 x GRU-256, dropout 0.2, 3000 steps (6.1M characters,
    # about 4 minutes on 2 quiet cores); measured val block-256 1.500 on all blocks.
    # --time-budget only guards a slow machine; every validation block is evaluated.
    "shakespeare-30min": {
        "corpus": "shakespeare", "cell": "gru", "layers": 2, "hidden": 256, "dropout": 0.2,
        "batch": 32, "steps": 64, "optimizer": "adamw", "lr": 0.008, "weight_decay": 0.01,
        "schedule": "cosine", "warmup_steps": 100, "max_steps": 3000, "time_budget": 1740.0,
        "clip": 1.0, "eval_interval": 500, "keep_best": True, "epochs": 100,
    },
}
# prose-like prefixes: "The " alone often starts a heading underlined with "****"
PREFIXES = {"builtin": "The object ", "time-machine": "time traveller ",
            "shakespeare": "ROMEO:\n"}

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130


class CLIError(Exception):
    """An expected failure, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump, no traceback)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------
# argument types: clear messages for bad values

def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}")
    return v


def _fraction(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {s!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {s!r}")
    return v


def _probability(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {s!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {s!r}")
    return v


# ---------------------------------------------------------------------------
# parser

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastrnn`` command (for docs and tests).

    Returns
    -------
    argparse.ArgumentParser
        With the subcommands ``train``, ``generate`` and ``eval``.

    Examples
    --------
    >>> args = build_parser().parse_args(["generate", "model.npz", "-n", "50"])
    >>> args.command, args.model, args.length
    ('generate', 'model.npz', 50)
    """
    from . import __version__
    from .model import OPTIMIZERS, SAMPLINGS

    d = TRAIN_DEFAULTS
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="fastrnn", formatter_class=fmt,
                description="Fast character-level RNN language models on the CPU "
                            "(the d2l.ai RNN chapter, compiled).",
                epilog="Run 'fastrnn COMMAND --help' for the options of each command.")
    p.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    corpus_help = ("'builtin' (Python's own documentation text, no download), "
                   "'time-machine' (d2l's The Time Machine) or 'shakespeare' "
                   "(tiny-shakespeare, validated on nanoGPT's last 10%%), each downloaded "
                   "once and cached in $FASTRNN_DATA or ~/.cache/fastrnn, or the path of a "
                   "UTF-8 text file")
    pre_help = ("'d2l': lowercase letters and single spaces (d2l's preprocessing); 'raw': "
                "the text as is; 'auto' (default): d2l for time-machine, raw otherwise")

    # ---- train
    t = sub.add_parser(
        "train", formatter_class=fmt, help="train a model (the main job)",
        description="Train a character-level RNN language model with truncated BPTT. "
                    "Shows a progress bar, prints a sample after each epoch, saves the model "
                    "(with its training state) after each epoch and at the end.",
        epilog="Ctrl-C saves a checkpoint and exits (status 130); continue with "
               "'fastrnn train --resume FILE'. When resuming, the model size, corpus, "
               "preprocessing and minibatch settings come from the checkpoint, and "
               "--epochs is the total number of epochs.\n\n"
               "examples:\n"
               "  fastrnn train\n"
               "  fastrnn train --corpus time-machine --hidden 512 --optimizer sgd --lr 1\n"
               "  fastrnn train --cell lstm --layers 2 --dropout 0.2 --hidden 256\n"
               "  fastrnn train --corpus my.txt --epochs 30 --plot curve.png\n"
               "  fastrnn train --resume model.npz --epochs 20\n"
               "  fastrnn train --preset shakespeare --time-budget 180\n"
               "  fastrnn train --corpus shakespeare --optimizer adamw --schedule cosine "
               "--warmup-steps 100 --max-steps 2000 --eval-interval 250 --keep-best")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named settings (explicit flags override them): " + "; ".join(
                       f"'{name}' = " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                 if v is not True else
                                                 f"--{k.replace('_', '-')}"
                                                 for k, v in preset.items())
                       for name, preset in PRESETS.items()))
    g = t.add_argument_group("data")
    g.add_argument("--corpus", default=None, metavar="CORPUS",
                   help=f"{corpus_help} (default: builtin)")
    g.add_argument("--preprocess", choices=("auto", "raw", "d2l"), default=None,
                   help=pre_help)
    g.add_argument("--val-fraction", type=_fraction, default=None, metavar="F",
                   help=f"the last F of the corpus is held out for validation "
                        f"(default: {d['val_fraction']}; 0 disables validation)")
    g = t.add_argument_group("model")
    g.add_argument("--cell", choices=("rnn", "gru", "lstm"), default=None,
                   help="recurrent cell: the d2l chapter's Elman RNN, or PyTorch's GRU and "
                        "LSTM (default: rnn)")
    g.add_argument("--layers", type=_positive_int, default=None, metavar="N",
                   help="stacked recurrent layers (default: 1)")
    g.add_argument("--dropout", type=_fraction, default=None, metavar="P",
                   help="dropout between stacked layers during training, in [0, 1) "
                        "(default: 0; needs --layers 2 or more)")
    g.add_argument("--hidden", type=_positive_int, default=None, metavar="N",
                   help=f"hidden units H of every layer (default: {d['hidden']})")
    g.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh",
                   help="the Elman cell's nonlinearity (default: tanh)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="parameter precision (default: float32)")
    g.add_argument("--init", choices=("uniform", "d2l"), default=d["init"],
                   help="initialisation: 'uniform' in +-1/sqrt(H) (PyTorch's nn.RNN; trains "
                        "faster) or 'd2l' (weights ~ N(0, 0.01^2), zero biases) "
                        f"(default: {d['init']})")
    g = t.add_argument_group("training")
    g.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help=f"BPTT steps per minibatch, num_steps (default: {d['steps']})")
    g.add_argument("--batch", type=_positive_int, default=None, metavar="N",
                   help=f"sequences per minibatch (default: {d['batch']})")
    g.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help=f"number of epochs, total when resuming (default: {d['epochs']})")
    g.add_argument("--lr", type=_positive_float, default=None, metavar="X",
                   help="learning rate (default: " + ", ".join(
                       f"{v:g} for {k}" for k, v in DEFAULT_LR.items()) + ")")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help=f"sgd (d2l), adagrad (min-char-rnn) or adam "
                        f"(default: {d['optimizer']})")
    g.add_argument("--clip", type=_nonneg_float, default=None, metavar="X",
                   help=f"clip the gradient to global norm X, d2l's "
                        f"g <- min(1, X/||g||) g; 0 disables (default: {d['clip']:g})")
    g.add_argument("--clip-value", type=_positive_float, default=None, metavar="X",
                   help="also clip each gradient entry to [-X, X] (min-char-rnn uses 5)")
    g.add_argument("--sampling", choices=SAMPLINGS, default=None,
                   help="minibatches: d2l's sequential partitioning (state carried), random "
                        "sampling, or the current d2l edition's stride-1 windows "
                        f"(default: {d['sampling']})")
    g.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="OpenMP threads (default: $FASTRNN_NUM_THREADS, $OMP_NUM_THREADS, "
                        "or all cores)")
    g.add_argument("--weight-decay", type=_nonneg_float, default=None, metavar="X",
                   help="AdamW's decoupled weight decay on the weight matrices "
                        "(default: 0.01; --optimizer adamw only)")
    g = t.add_argument_group("schedule, evaluation, stopping")
    g.add_argument("--schedule", choices=("constant", "step", "cosine"), default=None,
                   help="learning rate per step: constant, step (char-rnn: times "
                        "--decay-factor after every epoch from --decay-after on) or cosine "
                        "(nanoGPT: linear warm-up, cosine down to --min-lr at the last step) "
                        "(default: constant)")
    g.add_argument("--warmup-steps", type=_nonneg_int, default=None, metavar="N",
                   help="linear warm-up steps (default: 0)")
    g.add_argument("--min-lr", type=_nonneg_float, default=None, metavar="X",
                   help="the cosine schedule's final rate (default: lr/10)")
    g.add_argument("--decay-factor", type=_positive_float, default=None, metavar="X",
                   help="the step schedule's factor per epoch, in (0, 1] (default: 0.97)")
    g.add_argument("--decay-after", type=_positive_int, default=None, metavar="N",
                   help="the step schedule decays after epoch N and every later one "
                        "(default: 10)")
    g.add_argument("--max-steps", type=_positive_int, default=None, metavar="N",
                   help="stop after N optimizer steps (also the schedule's horizon)")
    g.add_argument("--time-budget", type=_positive_float, default=None, metavar="S",
                   help="stop after S seconds of training (does not change the schedule)")
    g.add_argument("--eval-interval", type=_positive_int, default=None, metavar="N",
                   help="also evaluate every N steps: mean loss over 256-character "
                        "validation blocks, each from a zero state (nanoGPT's measure)")
    g.add_argument("--eval-blocks", type=_positive_int, default=None, metavar="N",
                   help="evaluate only N evenly spaced blocks (default: all)")
    g.add_argument("--val-streams", type=_positive_int, default=None, metavar="N",
                   help="per-epoch validation of sequential/random sampling: N contiguous "
                        "streams, each from a zero state (default: 1, the whole text as "
                        "one stream; --distributed splits the streams among the ranks)")
    g.add_argument("--keep-best", action="store_true", default=None,
                   help="save the parameters with the lowest validation loss to "
                        "<out stem>.best.npz (the --out file holds the last ones)")
    g.add_argument("--patience", type=_positive_int, default=None, metavar="N",
                   help="stop after N evaluations without a new best validation loss")
    g.add_argument("--on-spike", choices=("skip", "rollback", "stop"), default=None,
                   help="a finite loss spike (> 10 log V + 10 nats) skips the minibatch, "
                        "rolls back the last update and skips, or stops (default: skip); "
                        "NaN/inf always stops")
    g.add_argument("--seed", type=_nonneg_int, default=None, metavar="N",
                   help=f"seed of initialisation, minibatch order and samples "
                        f"(default: {d['seed']})")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI, one process per rank: "
                        "mpiexec -n N fastrnn train --distributed ... (needs "
                        "pip install 'fastrnn[mpi]'); --batch is the global batch, split by "
                        "rows; rank 0 prints and writes the files")
    g = t.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="FILE",
                   help=f"where to save the model (default: {d['out']})")
    g.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="where to save the training state every epoch and on Ctrl-C "
                        "(default: the --out file)")
    g.add_argument("--resume", default=None, metavar="FILE",
                   help="continue training from a checkpoint")
    g.add_argument("--plot", default=None, metavar="PNG",
                   help="write train/validation perplexity per epoch as a PNG, and the "
                        "loss against wall time when --eval-interval is set "
                        "(needs matplotlib: pip install 'fastrnn[plot]')")
    g.add_argument("--prefix", default=None, metavar="TEXT",
                   help="prefix of the sample printed after each epoch "
                        "(default: 'The object ' for builtin, 'time traveller ' for "
                        "time-machine, "
                        "the first characters of a file)")
    g.add_argument("--sample-length", type=_nonneg_int, default=d["sample_length"],
                   metavar="N", help=f"characters per sample; 0 disables samples "
                                     f"(default: {d['sample_length']})")
    g.add_argument("--temperature", type=_positive_float, default=d["temperature"],
                   metavar="X", help=f"sampling temperature of the samples "
                                     f"(default: {d['temperature']})")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    # ---- generate
    gp = sub.add_parser(
        "generate", formatter_class=fmt, help="generate text from a model",
        description="Warm up the model on PREFIX, then sample characters and stream them "
                    "to stdout (the prefix is printed first).",
        epilog="examples:\n  fastrnn generate model.npz --prefix 'The ' -n 500 --seed 1\n"
               "  fastrnn generate model.npz --greedy")
    gp.add_argument("model", metavar="MODEL", help="a model file saved by 'fastrnn train'")
    gp.add_argument("--prefix", default=None, metavar="TEXT",
                    help="text that starts the generation (default: the one used in training)")
    gp.add_argument("-n", "--length", type=_nonneg_int, default=500, metavar="N",
                    help="characters to generate (default: 500)")
    gp.add_argument("--temperature", type=_positive_float, default=0.8, metavar="X",
                    help="sampling temperature: lower is more conservative (default: 0.8)")
    gp.add_argument("--top-k", type=_positive_int, default=None, metavar="K",
                    help="sample only among the K most likely characters")
    gp.add_argument("--top-p", type=_probability, default=None, metavar="P",
                    help="nucleus sampling: only among the most likely characters whose "
                         "probabilities add up to P, in (0, 1]")
    gp.add_argument("--greedy", action="store_true",
                    help="always take the most likely character (d2l's predict)")
    gp.add_argument("--seed", type=_nonneg_int, default=None, metavar="N",
                    help="seed of the sampler: the same seed gives the same text "
                         "(default: random)")
    gp.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                    help="OpenMP threads (default: all cores); the text is the same for "
                         "every thread count")

    # ---- eval
    e = sub.add_parser(
        "eval", formatter_class=fmt, help="print a model's perplexity on a corpus",
        description="Print the perplexity exp(mean cross-entropy) of MODEL on a corpus, "
                    "predicting each character from all those before it.",
        epilog="examples:\n  fastrnn eval model.npz\n"
               "  fastrnn eval model.npz --corpus my.txt --batch 16")
    e.add_argument("model", metavar="MODEL", help="a model file saved by 'fastrnn train'")
    e.add_argument("--corpus", default=None, metavar="CORPUS",
                   help=f"{corpus_help} (default: the model's training corpus, else builtin)")
    e.add_argument("--preprocess", choices=("auto", "raw", "d2l"), default=None,
                   help=pre_help + " (default: as in training)")
    e.add_argument("--val-fraction", type=_fraction, default=None, metavar="F",
                   help="evaluate only the last F of the corpus (default: the model's "
                        "validation fraction when CORPUS is its training corpus, else 0: "
                        "the whole corpus)")
    e.add_argument("--batch", type=_positive_int, default=1, metavar="N",
                   help="cut the text into N streams evaluated in parallel: faster, "
                        "slightly different value (default: 1, exact)")
    e.add_argument("--block", type=_positive_int, default=None, metavar="N",
                   help="also report the mean loss over contiguous N-character blocks, each "
                        "from a zero state (nanoGPT's validation loss: --block 256)")
    e.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="OpenMP threads (default: all cores)")
    _add_export_parser(sub, fmt)
    return p


# ---------------------------------------------------------------------------
# helpers

_RANK = None        # this process's rank in a --distributed run (None: not distributed)


def _err(msg: str) -> None:
    where = f" (rank {_RANK})" if _RANK else ""
    print(f"fastrnn{where}: error: {msg}", file=sys.stderr)


def _mpi_dist():
    """The MPI peers of ``train --distributed``; non-root ranks print nothing to stdout."""
    global _RANK
    try:
        from .train.dist import MPIDist
        dist = MPIDist()
    except ImportError as exc:
        raise CLIError(f"--distributed needs mpi4py and an MPI library ({exc}); install "
                       "them with: pip install 'fastrnn[mpi]'") from None
    _RANK = dist.rank
    if not dist.is_root:
        sys.stdout = open(os.devnull, "w")
    return dist


def _load_corpus_once(dist, corpus, preprocess):
    """The root reads (or downloads) the corpus and sends it to the other ranks."""
    if dist is None or dist.size == 1:
        return _load_corpus(corpus, preprocess)
    got = None
    if dist.is_root:
        try:
            got = ("ok", _load_corpus(corpus, preprocess))
        except Exception as exc:
            got = ("error", exc)
    got = dist.comm.bcast(got, root=0)
    if got[0] == "error":
        if dist.is_root:
            raise got[1]
        raise SystemExit(EXIT_USAGE)           # the root reports it
    return got[1]


def _load_corpus(spec: str, preprocess: str | None) -> tuple[str, str]:
    """(text, preprocessing used) for a corpus spec."""
    from . import datasets

    mode = preprocess or "auto"
    if mode == "auto":
        mode = "d2l" if spec == "time-machine" else "raw"
    if spec == "builtin":
        text = datasets.builtin_text()
    elif spec == "time-machine":
        text = datasets.time_machine()
    elif spec == "shakespeare":
        text = datasets.tiny_shakespeare()
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            raise CLIError(f"corpus {spec!r} is a directory; give a text file, "
                           "'builtin' or 'time-machine'")
        if not path.is_file():
            raise CLIError(f"corpus {spec!r} is neither 'builtin', 'time-machine', "
                           "'shakespeare' nor an existing file")
        try:
            text = datasets.load_text(path)
        except UnicodeDecodeError as exc:
            raise CLIError(f"corpus {spec!r} is not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start})") from None
    return datasets.preprocess(text, mode), mode


def _default_prefix(spec: str, text: str) -> str:
    if spec in PREFIXES:
        return PREFIXES[spec]
    return text[: max(1, min(len(text), 10))]


def _check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plot needs matplotlib, which is not installed; install it with "
                       "pip install 'fastrnn[plot]' (or pip install matplotlib)") from None


def _write_plot(path: str, history: list[dict], title: str, evals=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    if evals:                      # a second panel: validation loss against wall time
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        ax2.plot([r["wall_time"] for r in evals], [r["val_loss"] for r in evals], ".-",
                 label="validation (256-char blocks)")
        tr = [(r["wall_time"], r["train_loss"]) for r in evals if r.get("train_loss")]
        if tr:
            ax2.plot(*zip(*tr), ".-", label="train (since last evaluation)")
        ax2.set_xlabel("seconds")
        ax2.set_ylabel("loss (nats/char)")
        ax2.grid(True, alpha=0.3)
        ax2.legend()
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, [r["train_ppl"] for r in history], "o-", label="train")
    val = [(r["epoch"], r["val_ppl"]) for r in history if r.get("val_ppl") is not None]
    if val:
        ax.plot(*zip(*val), "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _describe(lm) -> str:
    """"H=256" for the chapter's model; "lstm, 2 layers of H=256, dropout 0.2" otherwise."""
    if lm.cell == "rnn" and lm.num_layers == 1:
        return f"H={lm.hidden_size}"
    layers = f"{lm.num_layers} layers of " if lm.num_layers > 1 else ""
    drop = f", dropout {lm.dropout:g}" if lm.dropout else ""
    return f"{lm.cell}, {layers}H={lm.hidden_size}{drop}"


def _indent(sample: str) -> str:
    return "\n".join("  > " + line for line in sample.rstrip("\n").split("\n"))


# ---------------------------------------------------------------------------
# commands

def apply_preset(args) -> None:
    """Fill the flags that ``--preset NAME`` sets and the command line left unset."""
    if getattr(args, "preset", None):
        for key, value in PRESETS[args.preset].items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)


def _cmd_train(args) -> int:
    from . import datasets
    from .config import TrainConfig
    from .model import CharLM, TrainingDiverged, TrainingInterrupted
    from .vocab import Vocab

    d = TRAIN_DEFAULTS
    if args.plot:
        _check_plot_available()
    apply_preset(args)
    dist = _mpi_dist() if args.distributed else None
    root = dist is None or dist.is_root
    lm = None
    info: dict = {}
    cfg: dict = {}
    if args.resume:
        lm = CharLM.load(args.resume)
        if lm.training_state is None:
            raise CLIError(f"{args.resume} has no training state to resume from (it was "
                           "saved without it)")
        info = dict(lm.info)
        cfg = lm.training_state["config"]
        fixed = {"--hidden": (args.hidden, lm.hidden_size), "--cell": (args.cell, lm.cell),
                 "--layers": (args.layers, lm.num_layers),
                 "--dropout": (args.dropout, lm.dropout)}
        for flag, (given, have) in fixed.items():
            if given is not None and given != have:
                raise CLIError(f"{flag} {given} differs from the checkpoint's {have}; "
                               "a resumed run keeps the model's configuration")
    corpus = args.corpus or info.get("corpus") or "builtin"
    if args.resume and info.get("corpus") and corpus != info["corpus"]:
        raise CLIError(f"--corpus {corpus!r} differs from the checkpoint's corpus "
                       f"{info['corpus']!r}")
    preprocess = args.preprocess or info.get("preprocess")
    text, mode = _load_corpus_once(dist, corpus, preprocess)
    vf = args.val_fraction if args.val_fraction is not None else info.get(
        "val_fraction", 0.1 if corpus == "shakespeare" else d["val_fraction"])
    optimizer = args.optimizer or cfg.get("optimizer") or d["optimizer"]
    lr = args.lr if args.lr is not None else cfg.get("lr") or DEFAULT_LR[optimizer]
    if args.clip is not None:
        clip = args.clip or None
    else:
        clip = cfg.get("clip", d["clip"]) if cfg else d["clip"]
    clip_value = args.clip_value if args.clip_value is not None else cfg.get("clip_value")
    batch = args.batch or cfg.get("batch_size") or d["batch"]
    steps = args.steps or cfg.get("num_steps") or d["steps"]
    sampling = args.sampling or cfg.get("sampling") or d["sampling"]
    epochs = args.epochs or cfg.get("epochs") or d["epochs"]
    seed = args.seed if args.seed is not None else info.get("seed", d["seed"])
    out = Path(args.out or info.get("out") or d["out"]).expanduser()
    ckpt = Path(args.checkpoint).expanduser() if args.checkpoint else out
    if not out.parent.is_dir():
        raise CLIError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist")
    if lm is None:
        cell = args.cell or "rnn"
        if cell != "rnn" and args.nonlinearity != "tanh":
            raise CLIError(f"--nonlinearity {args.nonlinearity} applies to --cell rnn only")
        layers = args.layers or 1
        dropout = args.dropout or 0.0
        if dropout and layers == 1:
            raise CLIError(f"--dropout {dropout:g} applies between stacked layers; it needs "
                           "--layers 2 or more")
        lm = CharLM(Vocab(text), args.hidden or d["hidden"], cell=cell, num_layers=layers,
                    dropout=dropout, nonlinearity=args.nonlinearity, dtype=args.dtype,
                    seed=seed, init=args.init)
    prefix = args.prefix or info.get("prefix") or _default_prefix(corpus, text)
    lm.info = {"corpus": corpus, "preprocess": mode, "val_fraction": vf, "seed": seed,
               "prefix": prefix, "out": str(out)}
    ids = lm.vocab.encode(text)
    if corpus == "shakespeare" and vf:               # nanoGPT's cut: int(n * 0.9)
        train_ids, val_ids = datasets.nanogpt_split(ids, 1 - vf)
    else:
        train_ids, val_ids = datasets.train_val_split(ids, vf)
    if vf and len(val_ids) < 2:
        val_ids = None
    if not vf:
        val_ids = None
    progress = not args.no_progress
    print(f"fastrnn train: {corpus} corpus ({len(ids):,} characters, {mode} preprocessing, "
          f"{len(lm.vocab)} distinct), {len(train_ids):,} for training"
          + (f", {len(val_ids):,} for validation" if val_ids is not None else "")
          + f"; {_describe(lm)}, {lm.num_parameters:,} parameters; {optimizer} "
            f"lr={lr:g}, batch {batch} x {steps} steps, {sampling} sampling"
          + (f"; resuming after epoch {lm.training_state['epoch']}" if args.resume else ""),
          flush=True)
    t_start = time.perf_counter()

    def on_epoch(model, rec):
        if not progress:
            val = (f", val ppl {rec['val_ppl']:.3f} ({rec['val_loss']:.4f} nats/char)"
                   if rec.get("val_ppl") else "")
            print(f"epoch {rec['epoch']}/{epochs}: train ppl {rec['train_ppl']:.3f}{val}, "
                  f"{rec['tokens_per_s']:,.0f} tokens/s, {rec['wall_time']:.1f} s", flush=True)
        if args.sample_length:
            s = model.generate(prefix, args.sample_length, temperature=args.temperature,
                               seed=seed + rec["epoch"])
            print(_indent(s), flush=True)

    extra = {}
    for key in ("weight_decay", "schedule", "warmup_steps", "min_lr", "decay_factor",
                "decay_after", "max_steps", "time_budget", "eval_interval", "eval_blocks",
                "val_streams", "keep_best", "patience", "on_spike"):
        v = getattr(args, key, None)
        if v is None and key in cfg:
            v = cfg[key]
        if v is not None:
            extra[key] = v
    if extra.get("decay_factor", 1) > 1:
        raise CLIError(f"--decay-factor must be in (0, 1], got {extra['decay_factor']}")
    config = TrainConfig(epochs=epochs, batch_size=batch, num_steps=steps, lr=lr,
                         optimizer=optimizer, clip=clip, clip_value=clip_value,
                         sampling=sampling, num_threads=args.threads, progress=progress,
                         checkpoint=ckpt, seed=seed, **extra)
    if config.eval_interval and not progress:
        seen = [0]

        def on_step_evals():
            ev = lm.eval_history
            for r in ev[seen[0]:]:
                print(f"step {r['step']}: val loss {r['val_loss']:.4f} nats/char (ppl "
                      f"{r['val_ppl']:.3f}, 256-char blocks), train loss "
                      f"{r['train_loss']:.4f}, lr {r['lr']:.3g}, {r['wall_time']:.0f} s"
                      + (" (best)" if r.get("best") else ""), flush=True)
            seen[0] = len(ev)
    else:
        on_step_evals = None
    status = 0
    try:
        if on_step_evals is None:
            lm.fit(train_ids, val_text=val_ids, config=config, resume=bool(args.resume),
                   callbacks=[on_epoch], comm=None if dist is None else dist.comm)
        else:
            from .train import Trainer
            from .train.dist import make_dist

            class _Printing(Trainer):
                def _step_eval(self, st):
                    stop = super()._step_eval(st)
                    on_step_evals()
                    return stop
            _Printing(lm, config, callbacks=[on_epoch],
                      dist=dist if dist is not None else make_dist()).fit(
                train_ids, val_ids, resume=bool(args.resume))
    except TrainingInterrupted as exc:
        where = (f"after epoch {exc.epoch}" if exc.batch == 0
                 else f"at epoch {exc.epoch}, minibatch {exc.batch}")
        if root:
            print(f"\nfastrnn: interrupted {where}; checkpoint saved to {ckpt}. "
                  f"Continue with: fastrnn train --resume {ckpt}", file=sys.stderr,
                  flush=True)
        status = EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        if root:
            _err(str(exc))
        status = EXIT_DIVERGED
    except Exception as exc:
        if dist is None or type(exc).__name__ != "PeerFailed":
            raise                              # a rank's own error: it reports it
        if root:                               # another rank failed and reported it
            _err(str(exc))
        return 1
    wall = time.perf_counter() - t_start
    if status == 0 and root:
        lm.save(out)
        h = lm.history
        if h:
            last = h[-1]
            val = (f", val ppl {last['val_ppl']:.3f} ({last['val_loss']:.4f} nats/char)"
                   if last.get("val_ppl") else "")
            print(f"done: {len(h)} epochs, train ppl {last['train_ppl']:.3f}{val}; "
                  f"{wall:.1f} s; model saved to {out}", flush=True)
        st = lm.training_state or {}
        if lm.eval_history:
            r = lm.eval_history[-1]
            print(f"last evaluation: step {r['step']}, val loss {r['val_loss']:.4f} nats/char "
                  f"(ppl {r['val_ppl']:.3f}, 256-char blocks)"
                  + (f"; best {st['best_loss']:.4f} at step {st['best_step']}"
                     if st.get("best_loss") is not None else ""), flush=True)
        if config.keep_best and st.get("best_loss") is not None:
            from .train.trainer import best_path
            print(f"best parameters saved to {best_path(ckpt)}", flush=True)
    if args.plot and lm.history and root:
        _write_plot(args.plot, lm.history, f"{corpus}: {_describe(lm)}, {optimizer}",
                    lm.eval_history)
        print(f"perplexity curve written to {args.plot}", flush=True)
    return status


def _cmd_generate(args) -> int:
    from .model import CharLM

    lm = CharLM.load(args.model)
    prefix = args.prefix if args.prefix is not None else lm.info.get("prefix") or next(
        (t for t in lm.vocab.tokens if len(t) == 1 and t != lm.vocab.unk), "")  # most frequent
    if not prefix:
        raise CLIError("--prefix must not be empty")
    out = sys.stdout
    out.write(prefix)
    out.flush()
    for i, ch in enumerate(lm.stream(prefix, args.length, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                                     seed=args.seed, chunk_size=64,
                                     num_threads=args.threads)):
        out.write(ch)
        if ch == "\n" or i % 16 == 15:
            out.flush()
    out.write("\n")
    out.flush()
    return 0


def _cmd_eval(args) -> int:
    from . import datasets
    from .model import CharLM

    lm = CharLM.load(args.model)
    info = lm.info
    corpus = args.corpus or info.get("corpus") or "builtin"
    same = corpus == info.get("corpus")
    text, mode = _load_corpus(corpus, args.preprocess or (info.get("preprocess") if same
                                                          else None))
    vf = args.val_fraction if args.val_fraction is not None else (
        info.get("val_fraction", 0.0) if same else 0.0)
    ids = lm.vocab.encode(text)
    if vf and corpus == "shakespeare":
        _, part = datasets.nanogpt_split(ids, 1 - vf)
    else:
        _, part = datasets.train_val_split(ids, vf) if vf else (None, ids)
    if len(part) < 2:
        raise CLIError(f"the text to evaluate has {len(part)} characters; at least 2 needed")
    unk = lm.vocab.unk_id
    n_unk = int((part == unk).sum()) if unk is not None else 0
    t0 = time.perf_counter()
    ppl = lm.perplexity(part, batch_size=args.batch, num_threads=args.threads)
    dt = time.perf_counter() - t0
    what = f"the last {vf:g} of " if vf else ""
    print(f"perplexity {ppl:.4f} (cross-entropy {math.log(ppl):.4f} nats/char) on {what}"
          f"{corpus} ({len(part):,} characters, {mode} preprocessing) in {dt:.1f} s"
          + (f"; {n_unk:,} characters outside the model's vocabulary" if n_unk else "")
          + f" [model: {_describe(lm)}]")
    if args.block:
        bp = lm.perplexity(part, block=args.block, num_threads=args.threads)
        print(f"block perplexity {bp:.4f} (cross-entropy {math.log(bp):.4f} nats/char) over "
              f"contiguous {args.block}-character blocks, each from a zero state")
    return 0


def _add_export_parser(sub, fmt) -> None:
    """``fastrnn export MODEL.npz MODEL.onnx``."""
    from .export import DEFAULT_OPSET

    x = sub.add_parser(
        "export", formatter_class=fmt, help="write a model as an ONNX file",
        description="Write MODEL as a standard ONNX model (ONNX RNN/GRU/LSTM operators, "
                    "no custom operators) that ONNX Runtime runs. Inputs: ids (batch, time) "
                    "int64 and h0 (layers, batch, hidden) float32, zeros to start (and c0 "
                    "for LSTM); outputs: logits (batch, time, vocab) and hT (and cT). The "
                    "vocabulary is in the metadata key fastrnn.vocab. float64 models are "
                    "exported as float32. Needs the onnx package: "
                    "pip install 'fastrnn[onnx]'.",
        epilog="examples:\n  fastrnn export model.npz model.onnx\n"
               "  python examples/onnx_sample.py model.onnx --prefix 'The '")
    x.add_argument("model", metavar="MODEL", help="a model file saved by 'fastrnn train'")
    x.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    x.add_argument("--opset", type=_positive_int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset (default: {DEFAULT_OPSET}, which ONNX Runtime 1.12 "
                        f"and later run)")


def _cmd_export(args) -> int:
    from .model import CharLM

    lm = CharLM.load(args.model)
    try:
        path = lm.export_onnx(args.out, opset=args.opset)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    cell = getattr(lm, "cell", "rnn")
    note = " (float64 parameters written as float32)" if lm.dtype == "float64" else ""
    print(f"wrote {path}: {cell}, hidden size {lm.hidden_size}, vocabulary "
          f"{lm.vocab_size}, opset {args.opset}{note}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastrnn`` command; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``fastrnn``; None reads ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 when training diverged, 2 for bad arguments and expected
        failures (a one-line message on stderr), 130 after Ctrl-C.

    Examples
    --------
    A missing model file prints ``fastrnn: error: no such model file: missing.npz``
    on stderr and gives status 2:

    >>> main(["eval", "missing.npz"])
    2
    """
    from .checkpoint import CheckpointError
    from .datasets import ChecksumMismatchError, DatasetUnavailableError

    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _cmd_train, "generate": _cmd_generate, "eval": _cmd_eval}
    handlers["export"] = _cmd_export
    try:
        return handlers[args.command](args)
    except (CLIError, CheckpointError, DatasetUnavailableError, ChecksumMismatchError,
            FileNotFoundError, IsADirectoryError, PermissionError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nfastrnn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `fastrnn generate ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0

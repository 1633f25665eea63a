"""
Tiny Shakespeare
================

Karpathy's char-rnn corpus: 1.1 million characters of Shakespeare's plays. This example
trains a 256-unit tanh RNN with Adam on the first 300,000 characters for 4 epochs,
then samples at three temperatures. For a real run, use the
whole file, ``hidden_size=512`` and 30 epochs or more::

    fastrnn train --corpus tinyshakespeare.txt --hidden 512 --epochs 30 --out shakespeare.npz

The text is read from ``tinyshakespeare.txt`` in ``$FASTRNN_DATA``, the cache directory
or the repository's ``../shared/data`` folder; without it (as when the documentation
is built on a fresh machine) the example trains on the built-in corpus instead, and
says so.
"""

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

import fastrnn
from fastrnn import datasets


def corpus():
    """(name, text): tinyshakespeare.txt when it is on disk, else the built-in corpus."""
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    folders = [os.environ.get("FASTRNN_DATA"), datasets.data_dir(),
               here.parent.parent / "shared" / "data"]
    for folder in filter(None, folders):
        path = Path(folder) / "tinyshakespeare.txt"
        if path.is_file():
            return "tiny Shakespeare", datasets.load_text(path)
    return "the built-in corpus (tinyshakespeare.txt not found)", datasets.builtin_text()


name, text = corpus()
text = text[:300_000]
train, val = text[:-30_000], text[-30_000:]
print(f"corpus: {name}, {len(train):,} training and {len(val):,} validation characters")

# %%
# Train with Adam and global-norm clipping; the state is carried across minibatches
# (sequential partitioning, truncated BPTT over 64 steps).
lm = fastrnn.CharLM(text, hidden_size=256, seed=0)
history = lm.fit(train, val_text=val, epochs=4, batch_size=32, num_steps=64,
                 optimizer="adam", lr=3e-3, clip=1.0, progress=False, seed=0)
for r in history:
    print(f"epoch {r['epoch']}: train perplexity {r['train_ppl']:.2f}, "
          f"validation perplexity {r['val_ppl']:.2f}")

fig, ax = plt.subplots(figsize=(6, 4))
ax.plot([r["epoch"] for r in history], [r["train_ppl"] for r in history], "o-",
        label="train")
ax.plot([r["epoch"] for r in history], [r["val_ppl"] for r in history], "o-",
        label="validation")
ax.set_xlabel("epoch")
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax.set_ylabel("perplexity")
ax.set_title(f"H = 256, Adam, on {name.split(' (')[0]}")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Samples: lower temperatures repeat the commonest patterns, higher ones invent more.
prefix = "ROMEO:" if name == "tiny Shakespeare" else "The "
for temperature in (0.5, 0.8, 1.0):
    print(f"--- temperature {temperature}")
    print(lm.generate(prefix, 240, temperature=temperature, seed=1))
    print()

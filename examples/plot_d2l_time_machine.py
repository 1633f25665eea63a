"""
d2l's char-RNN on *The Time Machine*
====================================

The current edition of d2l.ai ("Recurrent Neural Network Implementation from
Scratch") trains a 32-unit RNN on H. G. Wells' *The Time Machine*: d2l's preprocessing
(every run of non-letters becomes one space, lower case), stride-1 windows of 32
characters, the first 10,000 windows for training and the next 5,000 for validation,
batch 1024, SGD with learning rate 1, gradient clipping at norm 1, the state reset for
every minibatch. d2l reports a validation perplexity of about 7.4 (PyTorch) / 7.3
(TensorFlow) after 100 epochs; fastrnn reaches 7.25 in about 5 s on 2 cores with
``python examples/d2l_time_machine.py --run current``.

This example runs the same model for 30 epochs so the documentation builds quickly.
It reads ``timemachine.txt`` from ``$FASTRNN_DATA``, the cache directory or the
repository's ``../shared/data`` folder, and never downloads it: without the file it
trains on the built-in corpus (Python's own documentation, preprocessed the same way),
and says so.
"""

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt

from fastrnn import CharLM, Vocab, datasets

EPOCHS = 30             # d2l: 100


def corpus():
    """(name, raw text): The Time Machine when it is on disk, else the built-in corpus."""
    here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
    folders = [os.environ.get("FASTRNN_DATA"), datasets.data_dir(),
               here.parent.parent / "shared" / "data"]
    for folder in filter(None, folders):
        try:
            return "The Time Machine", datasets.time_machine(data_dir=folder, download=False)
        except (datasets.DatasetUnavailableError, datasets.ChecksumMismatchError):
            continue
    return "the built-in corpus (timemachine.txt not found)", datasets.builtin_text()


name, raw = corpus()
text = datasets.preprocess(raw, "d2l")
vocab = Vocab(text)
ids = vocab.encode(text)
T, n_train, n_val = 32, 10_000, 5_000
train, val = ids[: n_train + T], ids[n_train: n_train + n_val + T]
print(f"corpus: {name}; vocabulary of {len(vocab)}: {''.join(vocab.tokens[1:])!r}")

# %%
# Train: d2l's settings, fewer epochs.
lm = CharLM(vocab, 32, seed=0)
history = lm.fit(train, val_text=val, epochs=EPOCHS, batch_size=1024, num_steps=T, lr=1.0,
                 optimizer="sgd", clip=1.0, sampling="windows", progress=False, seed=0)
last = history[-1]
print(f"after {len(history)} epochs: train perplexity {last['train_ppl']:.2f}, "
      f"validation perplexity {last['val_ppl']:.2f}")

fig, ax = plt.subplots(figsize=(6, 4))
epochs = [r["epoch"] for r in history]
ax.plot(epochs, [r["train_ppl"] for r in history], label="train")
ax.plot(epochs, [r["val_ppl"] for r in history], label="validation")
ax.axhline(7.4, color="gray", ls=":", label="d2l, 100 epochs (PyTorch)")
ax.set_xlabel("epoch")
ax.set_ylabel("perplexity")
ax.set_title(f"H = 32 on {name.split(' (')[0]}")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# d2l's ``predict``: greedy continuation of a prefix, and a sample at temperature 0.7.
print(repr(lm.generate("time traveller", 50, greedy=True)))
print(repr(lm.generate("time traveller", 50, temperature=0.7, seed=0)))

"""The training progress bar (tqdm on stderr): loss, perplexity, tokens/s."""
from __future__ import annotations

import math
import sys
import time

__all__ = ["EpochBar"]


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class EpochBar:
    """One bar per epoch; ``enabled=False`` makes every method a no-op."""

    POST_EVERY = 0.5                 # seconds between postfix updates

    def __init__(self, enabled: bool, *, total: int, initial: int, desc: str):
        self.bar = None
        self._last_post = 0.0
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="batch", desc=desc,
                            leave=True, dynamic_ncols=True, file=sys.stderr)

    def step(self, *, loss_sum: float, tokens: int, seconds: float, last: bool,
             val_loss: float | None = None, eta: float | None = None) -> None:
        """One minibatch done: the running mean training loss over the epoch so far, the
        last validation loss (nats/char), tokens/s and the run's ETA."""
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self._last_post > self.POST_EVERY or last:
            self._last_post = now
            mean = loss_sum / tokens if tokens else float("nan")
            self.bar.set_postfix_str(
                f"loss={mean:.3f} ppl={math.exp(min(mean, 700)):.2f}"
                + (f" val={val_loss:.3f}" if val_loss is not None else "")
                + f" tok/s={tokens / max(seconds, 1e-9):,.0f}"
                + (f" eta={_hms(eta)}" if eta is not None else ""), refresh=False)

    def epoch(self, record: dict) -> None:
        """The epoch's summary (train loss and perplexity, validation, throughput)."""
        if self.bar is None:
            return
        self.bar.set_postfix_str(
            f"loss={record['train_loss']:.3f} ppl={record['train_ppl']:.2f}"
            + (f" val_loss={record['val_loss']:.3f} val_ppl={record['val_ppl']:.2f}"
               if record["val_ppl"] else "")
            + f" tok/s={record['tokens_per_s']:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

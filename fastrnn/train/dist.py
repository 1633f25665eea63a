"""Where the trainer meets other processes: the single-process default.

The trainer talks to its peers only through the object it was given as ``dist``
(:class:`SingleProcess` when none). Each method is one collective operation, called
by every rank at the same point of the loop, so that all ranks take the same
decisions and none is left waiting. A data-parallel implementation (MPI) provides
the same methods; with one process each is the identity, and the trainer's results
are bitwise those of a plain loop.

Where the trainer calls them (one training step)::

    r0, r1 = dist.rows(B)                          # this rank's rows of the global batch
    loss, grads = loss_and_grad(X[r0:r1], ...,     # row_offset = r0 (dropout masks)
    loss = dist.reduce_mean(loss, local_count)     # the global batch's mean loss
    dist.reduce_gradient(gflat, local_count, total_count)  # one allreduce: global mean
    ... clip, optimizer (identical on every rank) ...
    interrupt, stop = dist.reduce_flags([ctrl_c, stop])   # stop flags, every step

and ``dist.is_root`` guards every output: progress bar, printing, callbacks,
checkpoints and model files. ``dist.gather_rows`` collects the carried hidden state
of the whole batch for a checkpoint (rank 0), ``dist.reduce_sum`` sums validation
totals.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SingleProcess"]


class SingleProcess:
    """The trainer's peers when there are none: every collective is the identity."""

    rank = 0
    size = 1
    is_root = True

    def rows(self, batch_size: int) -> tuple[int, int]:
        """``(r0, r1)``: the rows of a global minibatch this rank computes."""
        return 0, batch_size

    def reduce_mean(self, value: float, count: int) -> float:
        """The mean over all ranks of ``value`` (a mean over ``count`` items here)."""
        return value

    def reduce_gradient(self, gflat: np.ndarray, count: int, total: int) -> None:
        """Make ``gflat`` (the gradient of the mean loss over this rank's ``count``
        predictions) the gradient of the mean over all ``total``, in place, on every rank."""

    def reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``values`` over the ranks (every rank gets it)."""
        return values

    def reduce_flags(self, flags) -> list[bool]:
        """Logical OR of each flag over the ranks, in one reduction (every rank gets it)."""
        return [bool(f) for f in flags]

    def gather_rows(self, local, batch_size: int):
        """The recurrent state of the whole batch from each rank's rows, on the root
        (any state form: ``(B, H)``, ``(L, B, H)`` or an LSTM's pair; rows are axis 0 of
        a 2-D array, axis 1 of a 3-D one; see ``trainer.state_rows``)."""
        return local

    def barrier(self) -> None:
        """Wait for every rank."""

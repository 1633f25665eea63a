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

Data parallelism over MPI (:class:`MPIDist`, ``fit(distributed=True)`` or
``fit(comm=...)``, ``fastrnn train --distributed``): every rank holds the whole model
and optimizer state and runs the same loop on its rows of each global minibatch
(:func:`split_rows`: contiguous, in rank order, uneven splits allowed), telling the
kernels the global index of its first row (``row_offset``) so that dropout masks are
those of one process; the dropout seed of a step depends only on the run seed and the
step. The gradient allreduce is weighted by the rows' share of the batch, so every rank
holds the gradient of the global mean loss; clipping and the optimizer then run
identically everywhere and the parameters stay the same on every rank. The carried
hidden state of sequential sampling stays with the rank owning those rows; a checkpoint
gathers the whole batch's on the root, so checkpoints do not depend on the number of
ranks and a run resumes on any number.

Every decision is taken on reduced values, so all ranks take it at the same step: the
loss (divergence, spikes) is the reduced mean, validation the reduced sum
(:func:`shared_ce`), Ctrl-C and the ``_after_step``/``_after_epoch`` stop decisions
(early stopping, keep-best) go through :meth:`reduce_flags`. Failures: an exception in
a rank's step is reported through the loss reduction (the failing rank raises its own
error, the others :class:`PeerFailed`), setup and checkpoint writes reduce a failure
flag (``Trainer._together``), and any other exception on one rank ends the whole job
with ``MPI_Abort`` rather than leave the others waiting. Checkpoints are written
atomically by the root, so the file on disk is always the last complete one.

Signals. MPICH's ``mpiexec`` (hydra) starts each rank in a session and process group
of its own, so a terminal's Ctrl-C reaches ``mpiexec`` only; hydra then sends SIGINT
once to every rank ("Sending Ctrl-C to processes as requested") and a second Ctrl-C
kills the job ("Press Ctrl-C again to force abort"). Each rank's first SIGINT sets its
flag; the flags are OR-reduced after every step, every rank stops after the same
minibatch, the root writes the checkpoint and every rank raises
:class:`~fastrnn.train.TrainingInterrupted` (``fastrnn train`` exits 130). Under Slurm, send
the signal to the job step (``scancel --signal=INT``) or to ``srun``. A rank killed
by SIGKILL (or crashing) makes hydra end the other ranks within a second or so.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["SingleProcess", "MPIDist", "PeerFailed", "make_dist", "split_rows"]


class SingleProcess:
    """The trainer's peers when there are none: every collective is the identity."""

    rank = 0
    size = 1
    is_root = True

    def rows(self, batch_size: int) -> tuple[int, int]:
        """``(r0, r1)``: the rows of a global minibatch this rank computes."""
        return 0, batch_size

    def default_num_threads(self) -> int:
        """Threads when ``num_threads`` is None (:func:`fastrnn.default_num_threads`)."""
        from .._core import default_num_threads
        return default_num_threads()

    def reduce_mean(self, value: float, count: int, failed: bool = False) -> float:
        """The mean over all ranks of ``value`` (a mean over ``count`` items here);
        ``failed`` says this rank's step failed (it raises its own error next)."""
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

    def abort(self, code: int = 1) -> None:
        """End every rank now (nothing to do with one process: the error propagates)."""


# ---------------------------------------------------------------------------------------
# MPI (mpi4py): imported only when a distributed run asks for it

class PeerFailed(RuntimeError):
    """Another rank of a distributed run failed; this rank stopped with it.

    The failing rank raises its own exception; every other rank raises this one at the
    same step, so that no rank is left waiting in a collective operation.
    """


def split_rows(batch_size: int, size: int, rank: int) -> tuple[int, int]:
    """Rows ``(r0, r1)`` of a batch of ``batch_size`` rows that rank ``rank`` of
    ``size`` holds: contiguous blocks in rank order, the first ``batch_size % size``
    ranks one row more (uneven splits; a rank may hold none when ``size`` exceeds
    ``batch_size``)."""
    q, r = divmod(batch_size, size)
    r0 = rank * q + min(rank, r)
    return r0, r0 + q + (1 if rank < r else 0)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class MPIDist:
    """The trainer's peers over an MPI communicator (mpi4py): synchronous data parallelism.

    Every rank holds the whole model and optimizer state; rows ``rows(B)`` of each
    global minibatch are this rank's. Collectives per training step: one small
    allreduce of ``[loss sum, count, failed]`` (:meth:`reduce_mean`), one in-place
    allreduce of the flat gradient buffer (:meth:`reduce_gradient`), one of the stop
    flags (:meth:`reduce_flags`). MPI's sums run in a fixed order for every rank, so
    all ranks see the same reduced numbers and take the same decisions.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Default ``MPI.COMM_WORLD``.
    """

    def __init__(self, comm=None):
        from mpi4py import MPI            # only here: a plain run never imports mpi4py
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(self.comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator, got "
                            f"{type(comm).__name__}")
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.is_root = self.rank == 0
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        try:
            self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        finally:
            local.Free()

    def __repr__(self) -> str:
        return f"MPIDist(rank={self.rank}, size={self.size}, local_size={self.local_size})"

    def default_num_threads(self) -> int:
        """Threads per rank when ``num_threads`` is None: FASTRNN_NUM_THREADS or
        OMP_NUM_THREADS when set, else this host's cores divided among its ranks
        (at least one each; never more threads than cores in total unless there are
        more ranks than cores)."""
        from .._core import _env_threads, resolve_num_threads
        n = _env_threads()
        if n is not None:
            return resolve_num_threads(n)
        return resolve_num_threads(max(1, _cores() // self.local_size))

    def rows(self, batch_size: int) -> tuple[int, int]:
        return split_rows(batch_size, self.size, self.rank)

    def reduce_mean(self, value: float, count: int, failed: bool = False) -> float:
        """The mean over the whole batch; raises :class:`PeerFailed` when another rank
        reports ``failed`` (a failing rank raises its own error after this call)."""
        if self.size == 1:
            return value                   # exactly one process's value
        buf = np.array([float(value) * count if count else 0.0, float(count),
                        1.0 if failed else 0.0])
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        if buf[2] and not failed:
            raise PeerFailed(f"{int(buf[2])} other rank(s) of the distributed run failed; "
                             f"rank {self.rank} stopped with them")
        return float(buf[0] / buf[1]) if buf[1] else 0.0

    def reduce_gradient(self, gflat: np.ndarray, count: int, total: int) -> None:
        if count != total:
            gflat *= gflat.dtype.type(count / total)
        self.comm.Allreduce(self.MPI.IN_PLACE, gflat, op=self.MPI.SUM)

    def reduce_sum(self, values) -> np.ndarray:
        buf = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def reduce_flags(self, flags) -> list[bool]:
        buf = np.array([1 if f else 0 for f in flags], dtype=np.int32)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)
        return [bool(f) for f in buf]

    def gather_rows(self, local, batch_size: int):
        """The state of every row on the root (None elsewhere); a rank without rows
        may pass None."""
        parts = [p for p in self.comm.gather(local, root=0) or [] if p is not None]
        if not self.is_root:
            return None

        def cat(arrays):
            return np.concatenate(arrays, axis=0 if arrays[0].ndim == 2 else 1)
        if isinstance(parts[0], tuple):
            return tuple(cat([p[i] for p in parts]) for i in range(len(parts[0])))
        return cat(parts)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (MPI_Abort): for an error that struck one rank
        outside the coordinated points of the loop."""
        self.comm.Abort(code)


def coordinated(exc: BaseException) -> bool:
    """Whether every rank raises ``exc`` (or a :class:`PeerFailed`) at the same point: a
    decision taken on reduced values, or an error reported through a reduced flag."""
    from .trainer import TrainingDiverged, TrainingInterrupted
    return (isinstance(exc, (TrainingDiverged, TrainingInterrupted, PeerFailed))
            or getattr(exc, "_fastrnn_coordinated", False))


def abort_job(dist, exc: BaseException) -> None:
    """Report an error that struck this rank alone and end every rank (MPI_Abort): the
    others may be waiting for it in a collective operation."""
    import sys
    import time
    import traceback
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(f"fastrnn: rank {dist.rank} of {dist.size} failed "
                     f"({type(exc).__name__}: {exc}); aborting the job\n{text}")
    sys.stderr.flush()
    time.sleep(0.5)                 # let the launcher forward the message before the end
    dist.abort(1)


def make_dist(distributed: bool = False, comm=None):
    """The ``dist`` object of :class:`~fastrnn.train.Trainer` for ``fit(distributed=,
    comm=)``: :class:`SingleProcess` unless ``distributed`` or a ``comm`` is given.

    Parameters
    ----------
    distributed : bool, default False
        Train data-parallel over ``MPI.COMM_WORLD`` (imports mpi4py).
    comm : mpi4py.MPI.Intracomm, optional
        The communicator to train over; implies ``distributed``.

    Returns
    -------
    SingleProcess or MPIDist
        ``SingleProcess()`` for a plain run (mpi4py is not imported), else
        ``MPIDist(comm)`` (:class:`MPIDist`: synchronous data parallelism, one
        allreduce of the flat gradient per step).
    """
    if comm is None and not distributed:
        return SingleProcess()
    try:
        return MPIDist(comm)
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py and an MPI library ({exc}); "
                          "install them with: pip install 'fastrnn[mpi]'") from exc


def shared_ce(dist, model, ids: np.ndarray, sampling: str, num_steps: int, batch_size: int,
              num_threads) -> tuple[float, int]:
    """Validation totals ``(summed cross-entropy, predictions)`` of one process, computed
    on the ranks' shares and summed (every rank gets them).

    ``"windows"`` sampling: the stride-1 windows are independent, each rank evaluates a
    contiguous block of them (1/N of the work; the sum differs from one process's only
    in rounding). The other samplings evaluate one stream whose state is carried from
    the first character to the last, which cannot be split: the root evaluates it and
    the others add zeros (the exact value of one process).
    """
    total, count = 0.0, 0
    if sampling == "windows":
        rows = dist.rows(len(ids) - num_steps)          # the number of windows
        total, count = model._windows_ce(ids, num_steps, batch_size, num_threads, rows)
    elif dist.is_root:
        total, count = model._stream_ce(ids, 1, num_threads)
    s, c = dist.reduce_sum([total, count])
    return float(s), int(round(c))

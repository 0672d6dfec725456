"""Data-parallel training over MPI (mpi4py, optional): ``mpiexec -n R cllm train ...`` (docs/distributed.md).

``world()`` is this process's place in the run: rank 0 of 1 without an MPI launcher in the environment (then
mpi4py is never imported and MPI never initialised), else MPI's COMM_WORLD. The trainer gives each rank a
disjoint share of every global batch's micro-batches and sums their gradients with ``GradientSum``, along the
sphere tree of the micro-batches: the same additions in the same order for any rank count and any thread count,
so a run's weights are bitwise identical on 1 rank × 2 threads and 2 ranks × 1 thread (given the same
micro_batch), and a checkpoint resumes bitwise with another rank count.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
import zlib

import numpy as np

from .. import kernels as K
from ..runtime.threads import configured_num_threads, effective_cpu_count, sphere_tree

__all__ = ["World", "world", "GradientSum"]

# Set by the launchers: Open MPI's mpiexec; MPICH's and Intel MPI's (hydra) and srun --mpi=pmi2; PMIx ones
# (srun --mpi=pmix). Without any of them a run is one process and MPI is left alone.
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
PMIX_VAR = "PMIX_RANK"


@functools.lru_cache(maxsize=None)
def world() -> World:
    """This process's ranks: MPI's COMM_WORLD when started by an MPI launcher with more than one rank, else one
    rank (and MPI untouched)."""
    env = os.environ
    if not any(var in env for var in (*SIZE_VARS, PMIX_VAR)):
        return World(None)
    try:
        import mpi4py

        mpi4py.rc.thread_level = "funneled"  # only the main thread calls MPI; OpenMP threads never do
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:  # RuntimeError: mpi4py found no MPI library
        size_vars = SIZE_VARS + (("SLURM_NTASKS",) if PMIX_VAR in env else ())
        announced = max([int(env[v]) for v in size_vars if env.get(v, "").isdigit()] or [1])
        if announced > 1:
            raise RuntimeError(f"cllm: started by an MPI launcher with {announced} ranks, but mpi4py cannot be "
                               f"used ({e}): pip install 'cllm[mpi]' (docs/distributed.md), or run one "
                               f"process without mpiexec") from None
        return World(None)
    return World(MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None)


class World:
    """The ranks of a run and the collectives the trainer needs. With ``comm`` None (one rank) each of them is
    trivial and MPI is not touched."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank, self.size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)
        self.node_size, self.cpu_share = 1, effective_cpu_count()
        if comm:
            self._share_node()

    def _share_node(self) -> None:
        """Ranks on this node (MPI's shared-memory split) and this rank's share of the CPUs: the CPUs it may use
        divided among the ranks of the node whose CPU sets overlap its own (all of them when the launcher does
        not bind; none but itself when each is bound to its own cores)."""
        from mpi4py import MPI

        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
            sharing = sum(1 for other in node.allgather(cpus) if other & cpus)
            self.node_size = node.Get_size()
        finally:
            node.Free()
        self.cpu_share = max(1, effective_cpu_count() // sharing)

    def default_threads(self) -> int:
        """Kernel threads for this rank: the count set by threads(n), set_num_threads(n), $CLLM_NUM_THREADS or
        $OMP_NUM_THREADS, else its share of the node's CPUs (one rank: all of them; never R × all of them)."""
        n = configured_num_threads()
        return n if n is not None else self.cpu_share

    # --- collectives (every rank calls each at the same point) ------------------------------------------------

    def bcast(self, obj):
        """Rank 0's ``obj``, on every rank."""
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def bcast_array(self, a: np.ndarray) -> None:
        """Overwrite ``a`` with rank 0's, in place."""
        if self.comm is not None:
            self.comm.Bcast(a, root=0)

    def merge(self, items: dict) -> dict:
        """The union of every rank's ``items``."""
        if self.comm is None:
            return items
        return {k: v for part in self.comm.allgather(items) for k, v in part.items()}

    def first(self, value):
        """The first value other than None among the ranks' (e.g. a stop signal that reached one of them)."""
        values = [value] if self.comm is None else self.comm.allgather(value)
        return next((v for v in values if v is not None), None)

    def check_same(self, params: np.ndarray, step: int) -> None:
        """RuntimeError on every rank unless every rank's ``params`` have rank 0's CRC-32."""
        if self.comm is None:
            return
        sums = self.comm.allgather(zlib.crc32(params))
        differ = [r for r, s in enumerate(sums) if s != sums[0]]
        if differ:
            raise RuntimeError(f"train: at step {step} the weights of rank {', '.join(map(str, differ))} differ "
                               f"from rank 0's (CRC-32 {sums[differ[0]]:08x}, rank 0 {sums[0]:08x}): the ranks "
                               f"have diverged; check that every node reads the same data with the same cllm")

    @contextlib.contextmanager
    def abort_on_error(self):
        """With several ranks an exception on one would leave the others waiting in a collective for ever (and
        this one in MPI_Finalize): print it, then abort the whole job, which makes mpiexec exit non-zero."""
        if self.comm is None:
            yield
            return
        try:
            yield
        except BaseException as e:
            where = f"cllm (rank {self.rank} of {self.size})"
            if isinstance(e, (ValueError, TypeError, RuntimeError, OSError, MemoryError)):  # as the CLI: one line
                sys.stderr.write(f"{where}: error: {e}\n")
            else:
                sys.stderr.write(f"{where}: {traceback.format_exc()}")
            sys.stderr.flush()
            self.comm.Abort(1)


class GradientSum:
    """A step's gradient: the sum of its n micro-batch gradients along the sphere tree of the micro-batches
    (fan-out 12; node j is micro-batch j), in ``SphereTree.reduction_order``, on every rank.

    Round i of a step: rank r computes the micro-batch at pre-order position i·R + r (``mine()``) and passes its
    gradient to ``add``. The nodes arrive in pre-order, so each addition is made as soon as its operands exist,
    holding one partial per tree level. With R ranks, ``add`` first exchanges slices (Alltoallv): rank q sums
    slice q of every micro-batch's gradient, and ``finish`` gathers the summed slices into every rank's buffer
    (Allgatherv). Each rank sends and receives (k + 1)·(R − 1)/R of the gradient's bytes per step, k = n/R
    micro-batches per rank: for k = 1 what a ring allreduce moves. The additions do not depend on R, on how the
    buffer is sliced, or on the thread count: the result is bitwise the same.
    """

    def __init__(self, world: World, n: int, size: int):
        if n % world.size:
            raise ValueError(f"train: the {world.size} ranks cannot share {n} micro-batches per step: run a "
                             f"rank count that divides {n}, or (new runs) a micro_batch that divides batch_size "
                             f"/ ranks")
        self.world, self.n = world, n
        tree = sphere_tree(n)
        self.children, self.order = tree.children, tree.preorder()
        R, r = world.size, world.rank
        self.bounds = [size * q // R for q in range(R + 1)]  # rank q sums elements bounds[q]:bounds[q + 1]
        mine = self.bounds[r + 1] - self.bounds[r]
        self.partials = [np.empty(mine, np.float32) for _ in range(tree.depth)]  # one per level with children
        self.stack, self.arrived, self.total = [], 0, None
        if R > 1:  # MPI buffer specifications: a whole gradient by slices, and the slices received
            from mpi4py import MPI

            self.received = np.empty((R, mine), np.float32)
            self.by_slices = (np.diff(self.bounds).tolist(), self.bounds[:-1], MPI.FLOAT)
            self.receive = [self.received, [mine] * R, [mine * q for q in range(R)], MPI.FLOAT]

    @staticmethod
    def extra_bytes(n: int, size: int, ranks: int) -> int:
        """Memory a rank needs beyond the model's gradient buffer for n micro-batches of a ``size`` gradient."""
        slice_ = -(-size // ranks)
        return 4 * (sphere_tree(n).depth * slice_ + (ranks * slice_ if ranks > 1 else 0))

    def mine(self) -> list[int]:
        """The micro-batches this rank computes, in the order it must ``add`` their gradients."""
        return self.order[self.world.rank::self.world.size]

    def add(self, grad: np.ndarray) -> None:
        """Fold in this round's gradients (every rank calls it once per round, with the one it computed)."""
        for piece in self._exchange(grad):
            self._fold(self.order[self.arrived], piece)
            self.arrived += 1

    def finish(self, grad: np.ndarray) -> None:
        """Leave the step's gradient in ``grad`` on every rank, and start the next step."""
        total, self.total, self.arrived = self.total, None, 0
        if self.world.size > 1:
            self.world.comm.Allgatherv(total, [grad, *self.by_slices])
        elif total is not grad:
            np.copyto(grad, total)

    def _exchange(self, grad: np.ndarray):
        """The round's gradients in pre-order, as this rank's slice of each."""
        if self.world.size == 1:
            return [grad]
        self.world.comm.Alltoallv([grad, *self.by_slices], self.receive)
        return self.received

    def _fold(self, node: int, g: np.ndarray) -> None:
        """partial[parent] += partial[child] as soon as a subtree is complete (the stack holds the partials of
        ``node``'s ancestors; a node with children starts a partial of its own)."""
        if self.children[node]:
            partial = self.partials[len(self.stack)]
            np.copyto(partial, g)
            self.stack.append([partial, len(self.children[node])])
            return
        while self.stack:  # g is a complete subtree: add it to its parent's partial, and so on up
            top = self.stack[-1]
            K.residual_forward(top[0], g, out=top[0])  # top += g, elementwise, on the kernel threads
            top[1] -= 1
            if top[1]:
                return
            g = self.stack.pop()[0]
        self.total = g

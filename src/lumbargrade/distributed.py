"""Data-parallel training for the trainers: ``lumbargrade train ... --workers N``.

PyTorch DistributedDataParallel (DDP) over the ``gloo`` backend, so it runs on CPUs (and on GPUs
with ``backend='nccl'``). :func:`launch` starts N worker processes on this machine
(``torch.multiprocessing``, as ``torchrun`` would) or, with a Ray address, N Ray Train workers on a
cluster (the ``[scale]`` extra); each worker runs the trainer's function with a
:class:`DistContext` that the trainer reaches through :func:`current`.

The scheme keeps one process's semantics, so ``--workers N`` gives the same model as one worker up
to floating-point order (and per-shard BatchNorm statistics): every rank draws the *same* global
batch from the same seeded data pipeline, :meth:`DistContext.shard` keeps its contiguous part
(``batch_size / N`` items), DDP averages the gradients of the equal shards (the gradient of the
global batch's mean loss) and every rank applies the same optimizer step. Only rank 0 writes
(:attr:`DistContext.is_main`): weights, checkpoints, metrics and logs; evaluation runs on rank 0
on the unwrapped model. A trainer needs four hooks::

    dist = distributed.current()
    net_train = dist.wrap(net)            # DDP-wrapped for the training forward; `net` unchanged
    x, y = dist.shard(x, y)               # this rank's part of the global batch
    if dist.is_main: ...                  # write, evaluate, log

With one worker the context is a no-op (no process group, no wrapper).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["DistContext", "current", "launch"]


@dataclass
class DistContext:
    """Where this process stands in a data-parallel run."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0: the one process that writes files and evaluates."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: Any) -> Any:
        """``model`` wrapped in DDP (gradients all-reduced in backward); ``model`` itself when
        running alone. Parameters are shared: optimise, save and evaluate ``model``."""
        if not self.enabled:
            return model
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        with warnings.catch_warnings():
            # torch 2.14 deprecates `broadcast_buffers`, but its successor still syncs the buffers
            # at init; buffers (BatchNorm statistics) stay per rank, as this flag asks
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            return DistributedDataParallel(model, broadcast_buffers=False)

    def shard(self, *arrays: Any) -> Any:
        """This rank's contiguous part of each array (first axis) of a global batch; the parts of
        all ranks differ in size by at most one item. One array in, one out."""
        if not self.enabled:
            return arrays[0] if len(arrays) == 1 else arrays
        n = len(arrays[0])
        bounds = np.linspace(0, n, self.world_size + 1).round().astype(int)
        lo, hi = int(bounds[self.rank]), int(bounds[self.rank + 1])
        if hi <= lo:  # fewer items than ranks: this rank repeats the last item with zero weight
            lo, hi = n - 1, n  # (its gradient is scaled to 0 by `scale`)
        out = tuple(a[lo:hi] for a in arrays)
        return out[0] if len(out) == 1 else out

    def loss_scale(self, n_global: int) -> float:
        """Factor for this rank's mean loss so that DDP's gradient average equals the gradient of
        the global batch's mean loss when shards differ in size (1.0 for equal shards)."""
        if not self.enabled:
            return 1.0
        bounds = np.linspace(0, n_global, self.world_size + 1).round().astype(int)
        n_local = int(bounds[self.rank + 1] - bounds[self.rank])
        return self.world_size * n_local / max(n_global, 1)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable object)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


_CURRENT = DistContext()


def current() -> DistContext:
    """The context of this process (a single-process context outside :func:`launch`)."""
    return _CURRENT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, backend: str, threads: int, fn: Callable, args: tuple,
            result_q: Any) -> None:
    import torch
    import torch.distributed as dist

    global _CURRENT
    torch.set_num_threads(max(1, threads))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    _CURRENT = DistContext(rank, world)
    try:
        out = fn(*args)
        if rank == 0:
            result_q.put(("ok", out))
        result_q.put(("finished", rank))  # its work done: what may still fail is the teardown
    except BaseException as e:  # every rank reports; rank 0's error is the one shown
        if isinstance(e, InputError):  # sent as its parts: an InputError does not unpickle
            result_q.put(("error", (rank, "input", e.where, e.problem)))
        else:
            result_q.put(("error", (rank, "other", None, f"{type(e).__name__}: {e}")))
        raise
    finally:
        try:
            dist.destroy_process_group()
        finally:
            _CURRENT = DistContext()


def launch(fn: Callable, workers: int, *args: Any, ray_address: str | None = None,
           backend: str = "gloo", threads_per_worker: int | None = None) -> Any:
    """Run ``fn(*args)`` in ``workers`` data-parallel processes; returns rank 0's result.

    ``workers == 1``: ``fn(*args)`` here, no process group. ``ray_address``: Ray Train workers on
    that cluster (``local`` starts one here) instead of local processes. ``threads_per_worker``:
    torch threads of each process (default: this machine's cores divided among the workers).
    """
    if workers < 1:
        raise InputError("--workers", f"must be at least 1, got {workers}")
    if workers == 1 and ray_address is None:
        return fn(*args)
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    if ray_address is not None:
        return _launch_ray(fn, workers, args, ray_address, threads)
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, workers, port, backend, threads, fn, args, q), daemon=False)
             for r in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    results = []
    while not q.empty():
        results.append(q.get())
    errors = sorted((r[1] for r in results if r[0] == "error"), key=lambda r: (r[1] != "input", r[0]))
    if errors:  # an InputError (the user's mistake) first, else the lowest rank's failure
        _, kind, where, problem = errors[0]
        if kind == "input":
            raise InputError(where, problem)
        raise RuntimeError(f"data-parallel training failed on rank {errors[0][0]}: {problem}")
    ok = [r[1] for r in results if r[0] == "ok"]
    finished = {r[1] for r in results if r[0] == "finished"}
    codes = [p.exitcode for p in procs]
    if not ok or len(finished) < workers:
        raise RuntimeError(f"data-parallel training failed (worker exit codes {codes})")
    if any(c != 0 for c in codes):  # every rank finished its work; one died while shutting down
        print(f"lumbargrade: warning: a data-parallel worker exited with code {codes} after finishing its "
              "work (while shutting down its process group); the result is complete", file=sys.stderr)
    return ok[0]


def _launch_ray(fn: Callable, workers: int, args: tuple, address: str, threads: int) -> Any:
    """Ray Train (``TorchTrainer``): Ray starts the workers and their gloo process group."""
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise InputError("--ray", "needs Ray Train, which is not installed: pip install 'lumbargrade[scale]'") from None
    import logging
    import tempfile

    cwd = os.getcwd()

    def loop(config: dict) -> None:
        import torch
        import torch.distributed as dist

        # Ray pickles this closure by value, with a copy of this module's globals: the context the
        # trainers read (``current()``) must be set on the module itself
        import lumbargrade.distributed as module

        if os.path.isdir(cwd):  # Ray starts its workers elsewhere: relative paths are the driver's
            os.chdir(cwd)
        torch.set_num_threads(threads)
        module._CURRENT = module.DistContext(dist.get_rank(), dist.get_world_size())
        try:
            out = fn(*args)
        finally:
            module._CURRENT = module.DistContext()
        # rank 0's result goes to the driver through a small actor, not `ray.train.report`: a report
        # is collective in Ray Train 2 (rank 0 alone would wait for the others forever), and which
        # rank's metrics the run's result keeps is not rank 0's by rule
        if dist.get_rank() == 0:
            import ray

            ray.get(box.put.remote(out))

    local = address in ("", "local")
    ray.init(address=None if local else address, num_cpus=(os.cpu_count() if local else None),
             include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True)
    try:
        box = ray.remote(num_cpus=0)(_ResultBox).remote()
        trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=workers, use_gpu=False,
                                                                  resources_per_worker={"CPU": 1}),
                               torch_config=None,
                               run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="lumbargrade-raytrain-"),
                                                    name="train"))
        try:
            result = trainer.fit()
        except Exception as e:  # a user's mistake found in a worker: its one line, not Ray's report
            user = _user_error(e)
            if user is None:
                raise
            raise user from None
        if result.error:
            raise _user_error(result.error) or result.error
        return ray.get(box.get.remote())
    finally:
        ray.shutdown()


class _ResultBox:
    """Holds rank 0's result for the driver (a Ray actor in :func:`_launch_ray`)."""

    def __init__(self) -> None:
        self.value: Any = None

    def put(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def _user_error(error: BaseException) -> InputError | None:
    """The :class:`InputError` a Ray Train worker raised, found inside the error Ray reports
    (its worker-group error, or the exception chain), so the CLI prints it as one line."""
    seen: set[int] = set()
    todo: list[Any] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, InputError):
            return e
        if isinstance(e, BaseException):
            todo += [e.__cause__, e.__context__]
        for attr in ("worker_failures", "errors"):
            v = getattr(e, attr, None)
            if isinstance(v, dict):
                todo += list(v.values())
            elif isinstance(v, (list, tuple)):
                todo += list(v)
    return None

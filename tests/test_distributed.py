"""Data-parallel training (lumbargrade.distributed): 2 DDP processes give 1 process's model."""

from __future__ import annotations

import numpy as np
import pytest

from lumbargrade.distributed import DistContext, current, launch


def test_shards_cover_the_batch_once_and_scale_to_the_global_mean():
    x = np.arange(10)
    for world in (1, 2, 3, 4):
        parts = [DistContext(r, world).shard(x) for r in range(world)]
        assert np.array_equal(np.concatenate(parts), x)
        scales = [DistContext(r, world).loss_scale(10) for r in range(world)]
        # DDP averages gradients: mean over ranks of scale * (mean over the shard) = global mean
        assert np.isclose(np.mean([s * p.mean() for s, p in zip(scales, parts)]), x.mean())
    # fewer items than ranks: the idle rank takes the last item with zero weight
    assert DistContext(1, 3).shard(np.arange(2)).tolist() == [1] and DistContext(1, 3).loss_scale(2) == 0.0


def test_single_worker_is_a_plain_call():
    assert launch(lambda a: a + 1, 1, 41) == 42
    ctx = current()
    assert ctx.world_size == 1 and ctx.is_main and ctx.wrap("m") == "m"


def _toy_train(steps: int, batch: int) -> dict:
    """A small MLP trained with the trainers' hooks; returns rank 0's weights (numpy)."""
    import torch

    dist = current()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x_all = rng.normal(size=(96, 12)).astype(np.float32)
    y_all = (x_all[:, :3].sum(1, keepdims=True) > 0).astype(np.float32)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    net_train = dist.wrap(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        idx = rng.choice(len(x_all), size=batch, replace=False)  # the same global batch on every rank
        x, y = dist.shard(x_all[idx], y_all[idx])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net_train(torch.from_numpy(x)), torch.from_numpy(y)) * dist.loss_scale(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("batch", [16, pytest.param(15, marks=pytest.mark.slow)])  # equal, unequal shards
def test_two_ddp_processes_train_the_same_model_as_one(batch):
    one = launch(_toy_train, 1, 25, batch)
    two = launch(_toy_train, 2, 25, batch, threads_per_worker=1)
    assert set(one) == set(two)
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5)
    assert not np.allclose(one["0.weight"], _toy_train(0, batch)["0.weight"])  # it did train


@pytest.mark.slow
def test_ray_train_workers_return_rank_0s_model():
    """Through Ray Train (a local Ray): the run ends (not waiting on a collective that rank 0
    alone entered) and gives back rank 0's result, the model two local DDP processes train."""
    pytest.importorskip("ray.train.torch")
    import sys
    import threading

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    box: dict = {}

    def run():
        try:
            box["r"] = launch(_toy_train, 2, 25, 16, ray_address="local")
        except Exception as e:  # noqa: BLE001 - shown by the assertion below
            box["r"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=300)
    assert not t.is_alive(), "the Ray Train run did not end within 300 s"
    local = launch(_toy_train, 2, 25, 16, threads_per_worker=1)
    assert isinstance(box.get("r"), dict), box.get("r")
    assert set(box["r"]) == set(local)
    for k in local:
        np.testing.assert_allclose(box["r"][k], local[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_an_input_error_on_rank_0_is_reported_as_such():
    from lumbargrade.errors import InputError

    with pytest.raises(InputError, match="boom"):
        launch(_raise_input_error, 2)


def _raise_input_error():
    from lumbargrade.errors import InputError

    if current().is_main:
        raise InputError("x", "boom")
    current().barrier()


def test_project_errors_survive_pickling_and_are_found_inside_a_wrapped_error():
    """Ray sends a worker's exception to the driver pickled: the project's errors must arrive whole,
    and the driver finds the user's InputError inside Ray's wrapper to print it as one line."""
    import pickle

    from lumbargrade.distributed import _user_error
    from lumbargrade.errors import InputError, MissingExtra, OutputError

    for e in (InputError("cohort/manifest.csv", "no manifest.csv here"), InputError(None, "bad"),
              MissingExtra("train segmentation", alternative="x"), OutputError("out/sr.dcm", "disk full")):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.one_line() == e.one_line()

    class WorkerGroupError(RuntimeError):
        def __init__(self, failures):
            super().__init__("training failed")
            self.worker_failures = failures

    user = InputError("cohort/manifest.csv", "no manifest.csv here")
    wrapped = WorkerGroupError({1: RuntimeError("wrapper")})
    wrapped.worker_failures[1].__cause__ = user
    assert _user_error(wrapped) is user
    assert _user_error(RuntimeError("no user error here")) is None


def _landmark_manifest(cohort, out):
    """The cohort's manifest with absolute paths, all patients but the last in split=train."""
    import csv

    with open(cohort / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    patients = sorted({r["patient_id"] for r in rows})
    for r in rows:
        r["split"] = "val" if r["patient_id"] == patients[-1] else "train"
        for k in ("sagittal_image", "sagittal_tissue_map"):
            if r.get(k):
                r[k] = str(cohort / r[k])
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def _train_cli(task, manifest, out, workers, *sets):
    from lumbargrade.cli import main

    argv = ["train", task, "--data", str(manifest), "--out", str(out), "--workers", str(workers)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    return _weights(out / "model.safetensors")


def test_landmark_trainers_run_data_parallel(phantom_cohort, tmp_path):
    """``train landmarks|landmark-refiner --workers 2``: one run folder written by rank 0 (each log
    line once), the network trained, and not the model one process trains on the whole batch: a
    rank that did not take its half of every batch would give that model exactly (CPU DDP has no
    synchronised BatchNorm, so the two differ by the half-batch statistics)."""
    import json

    manifest = _landmark_manifest(phantom_cohort, tmp_path / "manifest.csv")
    one = _train_cli("landmarks", manifest, tmp_path / "lm1", 1, "steps=10", "eval_every=10")
    two = _train_cli("landmarks", manifest, tmp_path / "lm2", 2, "steps=10", "eval_every=10")
    log = (tmp_path / "lm2" / "train.log").read_text().splitlines()
    assert sum("phantom val" in line for line in log) == 1, log
    assert json.loads((tmp_path / "lm2" / "metrics.json").read_text())["phantom_val"]
    assert json.loads((tmp_path / "lm2" / "config.json").read_text())["workers"] == 2
    params = [k for k in one if "running" not in k and "num_batches" not in k]
    assert max(np.abs(two[k] - one[k]).max() for k in params) > 1e-4

    _train_cli("landmark-refiner", manifest, tmp_path / "rf2", 2, "steps=20", "batch_size=8")
    log = (tmp_path / "rf2" / "train.log").read_text().splitlines()
    assert sum(line.startswith("step 20/20") for line in log) == 1, log
    assert json.loads((tmp_path / "rf2" / "config.json").read_text())["workers"] == 2
    assert "phantom_val" in json.loads((tmp_path / "rf2" / "metrics.json").read_text())


def test_landmark_schedule_runs_any_number_of_steps(phantom_cohort, tmp_path):
    """PyTorch's one-cycle schedule divides by zero where its warm-up is one step long (10 steps at
    10 %): every step count from 1 runs; 0 steps is the user's one-line error."""
    import torch

    from lumbargrade.cli import main
    from lumbargrade.levels.training import one_cycle

    for n in range(1, 41):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = one_cycle(opt, 0.1, n)
        for _ in range(n):
            opt.step()
            sched.step()
    manifest = _landmark_manifest(phantom_cohort, tmp_path / "manifest.csv")
    assert main(["train", "landmarks", "--data", str(manifest), "--out", str(tmp_path / "r"),
                 "--set", "steps=0"]) == 2


def _dies_on_rank1(when: str) -> int:
    """Rank 1 dies with exit code 3: ``during`` its work, or ``after`` it (at interpreter exit,
    as a crash while tearing down the process group would)."""
    import atexit
    import os

    if current().rank == 1:
        if when == "during":
            os._exit(3)
        atexit.register(os._exit, 3)
    return 7


def test_a_worker_dying_after_its_work_keeps_the_result_one_dying_during_it_does_not(capsys):
    assert launch(_dies_on_rank1, 2, "after", threads_per_worker=1) == 7
    assert "exited with code [0, 3] after finishing its work" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match=r"worker exit codes \[0, 3\]"):
        launch(_dies_on_rank1, 2, "during", threads_per_worker=1)

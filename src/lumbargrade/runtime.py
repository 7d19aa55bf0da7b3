"""Network runtimes: run a pack's networks with ONNX Runtime or PyTorch behind one call.

Every network is called the same way, ``net(x)`` with ``x`` a float32 array ``[n, c, h, w]``,
returning a float32 array (logits); pre- and post-processing (softmax, DSNT soft-argmax,
calibration) are numpy, so both runtimes share them.

* ``onnx``: ONNX Runtime (CPU) on ``model.onnx`` beside ``model.safetensors``. It starts in a
  fraction of a second where ``import torch`` takes seconds, which is what a one-study
  ``lumbargrade analyze`` process pays. ``model.onnx`` comes from ``lumbargrade pack export-onnx``
  (or ``pack build``), which records in ``onnx.json`` the SHA-256 of the weights it was exported
  from and the largest difference from PyTorch's output on a test input; a ``model.onnx`` whose
  weights have changed since is not used.
* ``torch``: the PyTorch module (training, GPUs, architectures without an export).
* ``auto`` (default): ``onnx`` where a current ``model.onnx`` is there and onnxruntime imports,
  else ``torch``.

The runtime is chosen by ``load_pack(..., runtime=)``, ``--runtime`` on the command line, or the
environment variable ``LUMBARGRADE_RUNTIME``; ``set_num_threads`` sets the CPU threads of both.
PyTorch comes with the training extra (``pip install "lumbargrade[train]"``): without it, a
network whose export is missing or stale is one clear error, not an import traceback.

Precision: ONNX Runtime runs fp32. A torch network asked for bf16 (the segmenter's config) runs
under bf16 autocast on the CPU only where the CPU has native bf16 arithmetic
(:func:`cpu_native_bf16`: AVX512-BF16 or AMX on x86, the BF16 extension on Arm); elsewhere bf16
is emulated and several times slower than fp32, so it runs fp32. ``$LUMBARGRADE_BF16`` (0 or 1)
overrides the detection.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "RUNTIMES",
    "OnnxNet",
    "TorchNet",
    "cpu_info",
    "cpu_native_bf16",
    "default_threads",
    "export_onnx",
    "file_sha256",
    "load_onnx_net",
    "num_threads",
    "resolve_runtime",
    "run_net",
    "set_num_threads",
]

RUNTIMES = ("auto", "onnx", "torch")
ONNX_FILE = "model.onnx"
ONNX_RECORD = "onnx.json"
_THREADS: int | None = None
_TORCH_THREADS: int | None = None


def set_num_threads(n: int | None, torch_threads: int | None = None) -> None:
    """CPU threads for the networks: ``n`` for ONNX Runtime sessions created from now on and for
    PyTorch (``torch_threads``, when given, for PyTorch instead). None: each runtime's default.
    torch is not imported for this; its setting is applied when a torch network first runs."""
    global _THREADS, _TORCH_THREADS
    _THREADS = None if n is None else max(1, int(n))
    t = torch_threads if torch_threads is not None else n
    _TORCH_THREADS = None if t is None else max(1, int(t))
    if _TORCH_THREADS is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_TORCH_THREADS)


def num_threads() -> int | None:
    """The ONNX Runtime threads set by :func:`set_num_threads` (None: its default)."""
    return _THREADS


def default_threads(processes: int = 1) -> int:
    """The CPU cores this process may use, shared among ``processes`` (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(processes)))


def resolve_runtime(requested: str | None = None) -> str:
    """``requested`` or ``$LUMBARGRADE_RUNTIME`` or ``auto``, checked against :data:`RUNTIMES`."""
    r = (requested or os.environ.get("LUMBARGRADE_RUNTIME") or "auto").strip().lower()
    if r not in RUNTIMES:
        raise InputError("--runtime", f"unknown runtime '{r}' (choose from {', '.join(RUNTIMES)})")
    return r


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: /proc/cpuinfo flags that mean native bf16 arithmetic (x86: AVX512-BF16, AMX; Arm: BF16).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
#: Flags reported beside benchmark figures: what the networks' speed depends on.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
                  "asimd", "bf16", "sve", "i8mm")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """``{"model": str|None, "flags": [the RELEVANT_FLAGS present], "native_bf16": bool}`` from
    ``/proc/cpuinfo`` (or the text given); flags are empty where it is not readable."""
    this_machine = cpuinfo is None
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    model = None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if model is None and this_machine:
        import platform

        model = platform.processor() or None
    return {"model": model, "flags": [f for f in RELEVANT_FLAGS if f in flags],
            "native_bf16": any(f in flags for f in BF16_FLAGS)}


_NATIVE_BF16: bool | None = None


def cpu_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (see :func:`cpu_info`);
    ``$LUMBARGRADE_BF16`` = 0 / 1 overrides."""
    global _NATIVE_BF16
    env = os.environ.get("LUMBARGRADE_BF16", "").strip()
    if env in ("0", "1"):
        return env == "1"
    if _NATIVE_BF16 is None:
        _NATIVE_BF16 = bool(cpu_info()["native_bf16"])
    return _NATIVE_BF16


def _torch_or_error(where: Any, why: str | None = None) -> None:
    """Raise a one-line error when PyTorch (the training extra) cannot be imported: ``why`` says
    why torch was needed (about ``where``, a model file); without it, ``--runtime torch`` was asked."""
    from .extras import torch_available

    if torch_available():
        return
    if why is None:
        from .errors import MissingExtra

        raise MissingExtra("--runtime torch")
    raise InputError(where, f"{why}, and PyTorch is not installed to run model.safetensors instead "
                            '(run `lumbargrade pack export-onnx` where it is, or pip install "lumbargrade[train]")')


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


class OnnxNet:
    """An ONNX Runtime session behind ``net(x) -> logits`` (float32 arrays)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = _onnxruntime()
        if ort is None:
            raise InputError(path, "onnxruntime is not installed (pip install onnxruntime, or use --runtime torch)")
        so = ort.SessionOptions()
        threads = threads if threads is not None else _THREADS
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: the report writers and readers share the CPU with us
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # a corrupt or foreign file
            raise InputError(path, f"cannot load the ONNX model ({type(e).__name__}: {e})") from e
        self.input_name = self.session.get_inputs()[0].name
        self.runtime = "onnx"
        self.precision = "fp32"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)

    def __repr__(self) -> str:
        return f"OnnxNet({str(self.path)!r})"


class TorchNet:
    """A torch module behind ``net(x) -> logits`` (float32 arrays): eval mode, inference mode,
    optionally channels-last and bf16 autocast. ``module`` is the torch module.

    ``bf16`` is what the model's config asks for; on the CPU it is used only where the CPU has
    native bf16 (:func:`cpu_native_bf16`), fp32 otherwise. ``precision`` says which ran."""

    def __init__(self, module: Any, bf16: bool = False, channels_last: bool = False) -> None:
        import torch

        self.module = module.eval()
        try:
            on_cpu = next(self.module.parameters()).device.type == "cpu"
        except (StopIteration, AttributeError):
            on_cpu = True
        self.bf16_requested = bool(bf16)
        self.bf16 = bool(bf16) and (not on_cpu or cpu_native_bf16())
        self.precision = "bf16" if self.bf16 else "fp32"
        self.memory_format = torch.channels_last if channels_last else None
        if self.memory_format is not None:
            self.module = self.module.to(memory_format=self.memory_format)
        self.runtime = "torch"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return run_net(self.module, x, bf16=self.bf16, memory_format=self.memory_format)

    def __repr__(self) -> str:
        return f"TorchNet({type(self.module).__name__})"


def run_net(net: Any, x: np.ndarray, bf16: bool = False, memory_format: Any = None) -> np.ndarray:
    """``net(x)`` as float32 numpy for an :class:`OnnxNet`, a :class:`TorchNet`, a bare torch
    module (evaluated on its own device in inference mode, its train/eval state restored) or any
    other callable taking and returning arrays."""
    if isinstance(net, (OnnxNet, TorchNet)) or not hasattr(net, "parameters"):
        return np.asarray(net(x), dtype=np.float32)
    import torch

    if _TORCH_THREADS is not None and torch.get_num_threads() != _TORCH_THREADS:
        torch.set_num_threads(_TORCH_THREADS)
    try:
        dev = next(net.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
            if memory_format is not None:
                t = t.contiguous(memory_format=memory_format)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bool(bf16)):
                y = net(t)
            return y.float().cpu().numpy()
    finally:
        net.train(was_training)


def load_onnx_net(folder: str | Path, runtime: str = "auto") -> OnnxNet | None:
    """The :class:`OnnxNet` of a model folder when ``runtime`` allows it and its ``model.onnx`` is
    current (``onnx.json`` records the SHA-256 of the ``model.safetensors`` it came from); None
    when the torch module should be used. ``runtime="onnx"`` turns a missing or stale file into an
    :class:`InputError`, and so does ``auto`` where PyTorch is not installed; ``runtime="torch"``
    without PyTorch is a :class:`lumbargrade.errors.MissingExtra`."""
    if runtime == "torch":
        _torch_or_error(folder)
        return None
    folder = Path(folder)
    onnx_p, rec_p, w_p = folder / ONNX_FILE, folder / ONNX_RECORD, folder / "model.safetensors"

    def unusable(why: str) -> None:
        if runtime == "onnx":
            raise InputError(onnx_p, f"{why} (run `lumbargrade pack export-onnx`, or use --runtime torch)")
        _torch_or_error(onnx_p, why)  # auto: PyTorch runs the weights instead, where it is installed

    if not onnx_p.is_file():
        return unusable("no ONNX export")
    if _onnxruntime() is None:
        return unusable("onnxruntime is not installed")
    try:
        rec = json.loads(rec_p.read_text())
    except (OSError, ValueError):
        return unusable(f"no readable {ONNX_RECORD} beside it")
    if w_p.is_file() and rec.get("weights_sha256") != file_sha256(w_p):
        return unusable("exported from other weights than model.safetensors (stale)")
    return OnnxNet(onnx_p)


def export_onnx(module: Any, example: np.ndarray, folder: str | Path, opset: int = 17,
                atol: float = 1e-3) -> dict[str, Any]:
    """Export a torch module to ``folder/model.onnx`` (batch dimension dynamic), check ONNX
    Runtime against PyTorch (fp32) on ``example`` ``[n, c, h, w]`` and write ``folder/onnx.json``
    (opset, versions, weights hash, largest absolute difference). Raises ``RuntimeError`` when the
    difference exceeds ``atol`` (the file is then removed)."""
    import torch

    folder = Path(folder)
    module = module.float().eval().to("cpu", memory_format=torch.contiguous_format)
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    onnx_p = folder / ONNX_FILE
    tmp = folder / (ONNX_FILE + ".tmp")
    with torch.inference_mode():
        ref = module(x).float().numpy()
    import warnings

    with warnings.catch_warnings():  # tracer notes (e.g. GroupNorm's batch-size check); the output is checked below
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(tmp), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=opset, dynamo=False)
    got = OnnxNet(tmp)(example)
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not np.isfinite(diff) or diff > atol:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{folder}: ONNX output differs from PyTorch by {diff:.3g} (> {atol})")
    os.replace(tmp, onnx_p)
    import onnxruntime

    w_p = folder / "model.safetensors"
    rec = {
        "file": ONNX_FILE,
        "weights_sha256": file_sha256(w_p) if w_p.is_file() else None,
        "opset": opset,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "check_input_shape": list(example.shape),
        "max_abs_diff_vs_torch_fp32": diff,
    }
    (folder / ONNX_RECORD).write_text(json.dumps(rec, indent=2) + "\n")
    return rec

"""``lumbargrade env-info``: versions, threads and model pack, for bug reports."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("env-info", help="print versions of Python, torch and key libraries, threads, model pack")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import json
    import os
    import platform
    import sys

    from .. import __version__

    info: dict = {
        "lumbargrade": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    for pkg in ["numpy", "scipy", "pydicom", "highdicom", "nibabel", "scikit-learn", "torch",
                "torchvision", "timm", "monai", "safetensors", "pillow", "onnxruntime", "onnx"]:
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    from ..extras import TRAIN_MODULES, missing
    from ..runtime import cpu_info, cpu_native_bf16

    ci = cpu_info()
    info["cpu"] = ci["model"]
    info["cpu_flags"] = " ".join(ci["flags"]) or None
    info["bf16_on_torch_path"] = cpu_native_bf16()  # native bf16 (or $LUMBARGRADE_BF16)
    gone = missing(TRAIN_MODULES)
    info["training_extra"] = "installed" if not gone else f"not installed (missing {', '.join(gone)})"
    if "torch" in gone:
        info["torch_threads"] = None
    else:
        try:
            import torch

            info["torch_threads"] = torch.get_num_threads()
            info["cuda_available"] = bool(torch.cuda.is_available())
        except Exception as e:  # torch broken: report, do not fail
            info["torch_threads"] = f"unavailable ({type(e).__name__})"
    try:
        from ..modelpack import NETWORK_COMPONENTS, default_pack_path, load_pack, pack_summary
        from ..runtime import load_onnx_net, resolve_runtime

        info["model_pack"] = pack_summary(default_pack_path())
        requested = resolve_runtime(None)
        pack = load_pack(default_pack_path(), runtime="torch")
        onnx = []
        for comp in NETWORK_COMPONENTS:
            if pack.has(comp):
                try:
                    onnx.append(load_onnx_net(pack.folder(comp), requested) is not None)
                except Exception:
                    onnx.append(False)
        info["runtime"] = (f"{requested}: ONNX Runtime for {sum(onnx)} of {len(onnx)} networks"
                           if requested != "torch" else "torch")
    except Exception as e:
        info["model_pack"] = f"unavailable ({type(e).__name__}: {e})"
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:16s} {v}")
    return 0

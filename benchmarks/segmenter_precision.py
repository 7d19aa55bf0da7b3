"""The bundled segmenter on the PyTorch path in bf16 and fp32, and with ONNX Runtime (fp32).

Usage::

    python benchmarks/segmenter_precision.py [--slices 5] [--repeats 7] [--threads 1]

Times ``Segmenter.segment_batch`` on ``--slices`` random 320 x 320 slices at 0.8 mm (resampling,
the network, mapping back; median of ``--repeats`` after one warm-up) with PyTorch under bf16
autocast (``LUMBARGRADE_BF16=1``), PyTorch fp32 (``LUMBARGRADE_BF16=0``) and ONNX Runtime. Prints
the CPU model and the flags the choice depends on beside the figures: `analyze` uses bf16 on the
PyTorch path only where the CPU has native bf16 (AVX512-BF16, AMX, Arm BF16); on a CPU without it
the bf16 figure shows what emulated bf16 would cost. Needs the training extra (PyTorch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for both runtimes (default 1)")
    a = ap.parse_args(argv)

    import numpy as np

    from lumbargrade.modelpack import default_pack_path
    from lumbargrade.runtime import cpu_info, set_num_threads
    from lumbargrade.segmentation.inference import load_segmenter

    set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    items = [(rng.uniform(0, 1000, (320, 320)).astype(np.float32), (0.8, 0.8)) for _ in range(a.slices)]
    ci = cpu_info()
    res: dict = {"cpu": ci["model"], "cpu_flags": ci["flags"], "cpu_native_bf16": ci["native_bf16"],
                 "slices": a.slices, "threads": a.threads, "seconds_median": {}}
    for name, bf16, runtime in (("torch bf16", "1", "torch"), ("torch fp32", "0", "torch"), ("onnx fp32", "0", "onnx")):
        os.environ["LUMBARGRADE_BF16"] = bf16
        seg = load_segmenter(default_pack_path() / "segmentation", runtime=runtime)
        seg.segment_batch(items)  # warm-up
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            seg.segment_batch(items)
            times.append(time.perf_counter() - t)
        res["seconds_median"][name] = round(statistics.median(times), 4)
    print(f"CPU: {ci['model']}; flags: {' '.join(ci['flags']) or 'not readable'}; "
          f"native bf16: {'yes' if ci['native_bf16'] else 'no'} (analyze's PyTorch path uses "
          f"{'bf16' if ci['native_bf16'] else 'fp32'} here)")
    for name, s in res["seconds_median"].items():
        print(f"  {name:11s} {s:.3f} s for {a.slices} slices ({a.threads} thread{'s' if a.threads > 1 else ''})")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Can the direction of the fat-water shift be read from the image? (phantom; an experiment, no model is shipped)

The DICOM header gives the size of the fat-water shift and its axis (``MagneticFieldStrength``,
``PixelBandwidth``, ``InPlanePhaseEncodingDirection``), not its sign. The image shows it: at a
water-to-fat edge the displaced fat leaves a dark gap on one side and overlaps the water, brighter,
on the other. This experiment trains a small CNN on crops of axial slices turned so that the readout
runs along the rows' direction, mirrored at random along it (the label, "fat displaced towards
higher columns", flips with the mirror: the network must read the direction from the image, not
learn the phantom's convention), then on new cohorts:

1. the direction per slice and per series (the mean over the series' slices of the logit of the
   slice minus that of its mirror image: antisymmetric, so a network blind to the image scores at
   chance);
   With ``--reversed DIR``, also on a cohort rendered with the readout polarity reversed (fat
   displaced the other way, nothing else changed): the answers must flip;
2. the figures of ``benchmarks/chemical_shift.py`` with the predicted disc and facet/foramen regions
   moved back by ``alpha`` x (the header's shift, the network's direction): disc Dice and box IoU,
   calibrated with the pack's calibration and with one refitted on a tuning cohort corrected the
   same way.

    python benchmarks/fat_shift_direction.py --train COHORT_T --held-out COHORT_V \\
        --tune COHORT_V --tune-evaluation EVAL_V --cohort COHORT_A --evaluation EVAL_A [...]

With ``--reader DIR`` instead of ``--train`` (a ``lumbargrade train fat-shift`` run or a pack's
``fat_shift`` folder), the shipped reader's direction accuracy on the ``--held-out`` cohorts
(repeatable) and the reversed-polarity cohort:

    python benchmarks/fat_shift_direction.py --reader PACK/fat_shift --held-out COHORT_A [...] \\
        --reversed COHORT_R --out benchmarks/results/fat_shift_reader.json

Cohorts: ``lumbargrade phantom ... --split 0,0,N --no-slice-bank`` (headers with the fat-water
tags; the recorded run: train seed 8181, 60 patients, held-out and tuning seed 8282, 30 patients,
both ``--axial-layout mixed``; test cohorts A-D of the README); evaluations: ``lumbargrade
evaluate`` outputs of the same cohorts. Needs torch (dev install).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CROP = 128


def load_series(study: Path) -> tuple[list[np.ndarray], float, int] | None:
    """The axial series of a phantom study, each slice turned so the readout runs along a row and
    scaled by its 99th percentile; the header's shift (pixels) and stored readout axis."""
    import pydicom

    from lumbargrade.io.acquisition import FAT_WATER_PPM, PROTON_MHZ_PER_T

    files = sorted((study / "dicom" / "ax_t2").glob("*.dcm"))
    ims, shift, axis = [], None, None
    for f in files:
        ds = pydicom.dcmread(f)
        phase = str(getattr(ds, "InPlanePhaseEncodingDirection", ""))
        if phase not in ("ROW", "COL") or not getattr(ds, "PixelBandwidth", None):
            return None
        a = ds.pixel_array.astype(np.float32)
        axis = 1 if phase == "COL" else 0
        if axis == 0:
            a = a.T
        ims.append(a / max(1.0, float(np.percentile(a, 99))))
        shift = FAT_WATER_PPM * PROTON_MHZ_PER_T * float(ds.MagneticFieldStrength) / float(ds.PixelBandwidth)
    return (ims, shift, axis) if ims else None


def load_cohort(cohort: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(cohort.iterdir()):
        if (p / "truth.json").is_file():
            s = load_series(p)
            if s is not None:
                out[p.name] = s
    return out


def make_net():
    from torch import nn

    class SignNet(nn.Module):
        """Four conv stages (batch norm), global mean, one logit: fat displaced towards higher columns."""

        def __init__(self):
            super().__init__()
            ch, layers = [1, 16, 32, 48, 64], []
            for i in range(4):
                layers += [nn.Conv2d(ch[i], ch[i + 1], 3, padding=1), nn.BatchNorm2d(ch[i + 1]), nn.ReLU(),
                           nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1, stride=2 if i else 1),
                           nn.BatchNorm2d(ch[i + 1]), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(64, 1)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3))).squeeze(1)

    return SignNet()


def _crop(a: np.ndarray, rng) -> np.ndarray:
    h, w = a.shape
    if rng is None:
        r0, c0 = (h - CROP) // 2, (w - CROP) // 2
    else:
        r0 = int(rng.integers(int(h * 0.15), max(int(h * 0.15) + 1, int(h * 0.85) - CROP)))
        c0 = int(rng.integers(int(w * 0.15), max(int(w * 0.15) + 1, int(w * 0.85) - CROP)))
    return a[r0:r0 + CROP, c0:c0 + CROP]


def train(series: dict[str, tuple], steps: int, seed: int, threads: int):
    """Binary cross-entropy, AdamW, cosine learning rate; batches of 16 random crops."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    keys = sorted(series)
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        xs, ys = [], []
        for _ in range(16):
            ims = series[keys[int(rng.integers(len(keys)))]][0]
            a, y = _crop(ims[int(rng.integers(len(ims)))], rng), 1.0  # the phantom displaces fat towards +
            if rng.random() < 0.5:
                a, y = a[:, ::-1], 0.0
            if rng.random() < 0.5:
                a = a[::-1, :]
            xs.append(np.ascontiguousarray(a) * rng.uniform(0.8, 1.2))
            ys.append(y)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))), torch.tensor(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}: loss {float(loss.detach()):.3f}", flush=True)
    net.eval()
    return net


def slice_scores(net, ims: list[np.ndarray]) -> np.ndarray:
    """Per slice, the logit of the slice minus that of its mirror image along the readout: > 0 says
    fat is displaced towards higher columns. Antisymmetric by construction (the mirror image gets
    exactly the opposite score), so a network that ignores the image cannot score above chance."""
    import torch

    x = np.stack([np.ascontiguousarray(_crop(a, None)) for a in ims])
    xm = np.ascontiguousarray(x[:, :, ::-1])
    with torch.no_grad():
        z = net(torch.from_numpy(x[:, None].astype(np.float32))).numpy()
        zm = net(torch.from_numpy(xm[:, None].astype(np.float32))).numpy()
    return (z - zm).reshape(-1)


def direction_accuracy(net, series: dict[str, tuple], expect: int = 1) -> dict:
    """The phantom displaces fat towards higher indices (``expect`` 1; -1 for a cohort rendered
    with the polarity reversed, :func:`reversed_cohort`): the right answer is a score of that sign."""
    slices, per_series = [], []
    for ims, _, _ in series.values():
        s = slice_scores(net, ims) * expect
        slices += list(s > 0)
        per_series.append(bool(s.mean() > 0))
    return {"n_series": len(per_series), "series_accuracy": round(float(np.mean(per_series)), 4),
            "n_slices": len(slices), "slice_accuracy": round(float(np.mean(slices)), 4)}


def reversed_cohort(out: Path, patients: int, seed: int) -> Path:
    """A phantom cohort (mixed axial layouts) rendered with the readout polarity reversed: fat
    displaced towards lower indices, everything else as ``lumbargrade phantom`` draws it; the
    headers are the same (they cannot state the polarity). Reuses a finished one."""
    if (out / "manifest.csv").is_file():
        return out
    import dataclasses

    import lumbargrade.phantom.cohort as cohort_mod
    from lumbargrade.phantom.config import AcquisitionConfig, PhantomConfig

    default = cohort_mod._default_backend

    def backend():
        be = default()
        draw = be.sample_mr_params

        def reversed_mr(rng):
            mr = draw(rng)
            return dataclasses.replace(mr, chemical_shift_px=-float(mr.chemical_shift_px))

        be.sample_mr_params = reversed_mr
        return be

    cohort_mod._default_backend = backend
    try:
        cohort_mod.generate_cohort(out, patients, seed=seed, split=(0, 0, patients), progress=False,
                                   config=PhantomConfig(slice_bank=False,
                                                        acquisition=AcquisitionConfig(ax_inplane="mixed")))
    finally:
        cohort_mod._default_backend = default
    return out


def estimated_shift(net, series: dict[str, tuple]):
    """``patient_id -> (signed stored pixels, stored axis)``: the header's size and axis, the
    network's direction (the sign of the mean score over the series; 0 when it is exactly 0)."""
    est = {}
    for pid, (ims, shift, axis) in series.items():
        est[pid] = (float(np.sign(slice_scores(net, ims).mean())) * shift, axis)
    return lambda pid: est.get(pid, (0.0, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, help="phantom cohort to train on")
    ap.add_argument("--reader", type=Path, help="instead of --train: a trained reader (`lumbargrade train fat-shift` "
                    "run or PACK/fat_shift)")
    ap.add_argument("--held-out", type=Path, required=True, action="append",
                    help="phantom cohort for the direction accuracy (repeatable)")
    ap.add_argument("--tune", type=Path, help="phantom cohort the calibration is refitted on")
    ap.add_argument("--tune-evaluation", type=Path, help="its lumbargrade evaluate output")
    ap.add_argument("--cohort", action="append", default=[], type=Path, help="test cohort (repeatable)")
    ap.add_argument("--evaluation", action="append", default=[], type=Path, help="its evaluate output")
    ap.add_argument("--reversed", type=Path, default=None,
                    help="folder for a cohort rendered with the readout polarity reversed (made here when "
                         "missing): the direction must come out the other way")
    ap.add_argument("--reversed-patients", type=int, default=20)
    ap.add_argument("--reversed-seed", type=int, default=9393)
    ap.add_argument("--alpha", type=float, default=0.75, help="fraction of the shift moved back")
    ap.add_argument("--steps", type=int, default=750)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=None, help="model pack (default: the bundled one)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fat_shift_direction.json")
    args = ap.parse_args(argv)
    if len(args.cohort) != len(args.evaluation):
        ap.error("give one --evaluation per --cohort")
    from chemical_shift import analyse

    from lumbargrade.boxes.calibration import fit_calibration
    from lumbargrade.modelpack import default_pack_path
    from lumbargrade.runtime import cpu_info

    pack = Path(args.models) if args.models else default_pack_path()
    box_rule = json.loads((pack / "box_rule.json").read_text())
    if (args.train is None) == (args.reader is None):
        ap.error("give --train or --reader")
    t0 = time.perf_counter()
    if args.reader is not None:
        from lumbargrade.segmentation.fat_shift import load_fat_shift_reader

        net = load_fat_shift_reader(args.reader, "torch").net.module
        trained = {"reader": args.reader.name}
    else:
        train_series = load_cohort(args.train)
        net = train(train_series, args.steps, args.seed, args.threads)
        trained = {"cohort": args.train.name, "series": len(train_series), "steps": args.steps,
                   "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1)}
    res: dict = {"cpu": cpu_info(), "model_pack": json.loads((pack / "pack.json").read_text()).get("version"),
                 "train": trained,
                 "command": " ".join(["python benchmarks/fat_shift_direction.py",
                                      *(["--reader", ("PACK/" if (args.reader.parent / "pack.json").is_file() else "") + args.reader.name]
                                        if args.reader else ["--train", args.train.name]),
                                      *(x for h in args.held_out for x in ("--held-out", h.name))]
                                     + (["--tune", args.tune.name, "--tune-evaluation", args.tune_evaluation.name]
                                        if args.tune and args.tune_evaluation else [])
                                     + [f"--cohort {c.name} --evaluation {e.name}"
                                        for c, e in zip(args.cohort, args.evaluation)]
                                     + (["--reversed", args.reversed.name] if args.reversed else [])
                                     + (["--alpha", str(args.alpha)] if args.cohort else [])
                                     + ([] if args.reader else ["--steps", str(args.steps)]))}
    res["direction"] = {}
    for h in args.held_out:
        held = load_cohort(h)
        res["direction"][h.name] = direction_accuracy(net, held)
        print(f"direction on {h.name}: {res['direction'][h.name]}")
    if args.reversed is not None:
        rev = reversed_cohort(args.reversed, args.reversed_patients, args.reversed_seed)
        res["direction_reversed_polarity"] = {
            "cohort": f"{args.reversed.name} (seed {args.reversed_seed}, {args.reversed_patients} patients, "
                      "mixed layouts, fat displaced towards lower indices)",
            **direction_accuracy(net, load_cohort(rev), expect=-1)}
        print(f"direction with the polarity reversed: {res['direction_reversed_polarity']}")
    refit = None
    if args.tune and args.tune_evaluation:
        tune_series = held if args.tune == args.held_out[-1] else load_cohort(args.tune)
        cases: dict = {}
        analyse(args.tune, args.tune_evaluation, box_rule, estimated_shift(net, tune_series), (0.0, args.alpha), cases)
        refit = {a: fit_calibration(c) for a, c in cases.items()}
    res["alpha"] = args.alpha
    res["cohorts"] = {}
    for cohort, ev in zip(args.cohort, args.evaluation):
        series = load_cohort(cohort)
        acc = direction_accuracy(net, series)
        row = {"direction": acc}
        for label, rule in [("pack_calibration", box_rule)] + (
                [(f"calibration_refitted_on_{args.tune.name}", None)] if refit else []):
            figures = {}
            for a in (0.0, args.alpha):
                r = rule if rule is not None else {**box_rule, "image_calibration": refit[a]}
                out = analyse(cohort, ev, r, estimated_shift(net, series), (a,))["oracle_correction"][str(a)]
                figures[str(a)] = {"dice_disc": out["dice_disc"], "iou_calibrated": out["iou_calibrated"]}
            row[label] = figures
        res["cohorts"][cohort.name] = row
        print(f"{cohort.name}: direction {acc}")
        for label, figs in row.items():
            if label != "direction":
                for a, f in figs.items():
                    print(f"  {label:40s} alpha {a:>4s}: Dice disc {f['dice_disc']:.4f}  IoU facet "
                          f"{f['iou_calibrated']['facet']:.3f} foramen {f['iou_calibrated']['foramen']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

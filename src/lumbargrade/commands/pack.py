"""``lumbargrade pack {info,build,export-onnx}``: show, assemble or export a model pack."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("pack", help="show or build a model pack")
    psub = p.add_subparsers(dest="pack_cmd", metavar="ACTION", required=True)
    i = psub.add_parser("info", help="what a model pack holds, what it was trained on, its metrics")
    i.add_argument("path", nargs="?", help="pack folder (default: the bundled pack)")
    i.add_argument("--json", action="store_true")
    b = psub.add_parser("build", help="assemble a pack from `lumbargrade train` run folders")
    b.add_argument("--out", required=True)
    b.add_argument("--from", dest="base", metavar="PACK",
                   help="start from this pack: every component not given below is copied from it, with its "
                   "box rule, box source, refiner weight, name, version and trained-on line unless given")
    b.add_argument("--name", default=None, help="default: the --from pack's, else lumbargrade-default")
    b.add_argument("--version", default=None, help="default: the --from pack's, else 0.1.0")
    b.add_argument("--trained-on", default=None, help="one line: the data the models were trained on")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--box-rule", metavar="FILE_OR_RUN_DIR", help="box_rule.json from `lumbargrade train boxes`")
    b.add_argument("--no-onnx", action="store_true", help="do not export the networks to ONNX (see `pack export-onnx`)")
    b.add_argument("--box-source", choices=["image", "fitted", "paper"], default=None,
                   help="how analyze places the facet/foramen boxes with this pack (default: image when the "
                   "segmenter has facet/foramen regions, else fitted)")
    b.add_argument("--sac-refiner-weight", type=float, default=None, metavar="W",
                   help="the dural sac refiner's share of the sac probability, in (0, 1] (default 1: its "
                   "outline replaces the segmenter's; 0.5: the mean of the two looks)")
    e = psub.add_parser("export-onnx", help="export a pack's networks to ONNX (model.onnx beside each model.safetensors) "
                        "for the fast, torch-free runtime; each export is checked against PyTorch")
    e.add_argument("path", help="pack folder")
    for comp in ("segmentation", "sac-refiner", "landmarks", "landmark-refiner", "tree", "classifier-central", "classifier-central-binary",
                 "classifier-foramen", "classifier-facet", "fat-shift"):
        b.add_argument(f"--{comp}", metavar="RUN_DIR")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from ..modelpack import COMPONENTS, build_pack, load_pack
    from ..numbers import is_finite_number

    if args.pack_cmd == "export-onnx" or (args.pack_cmd == "build" and not args.no_onnx):
        from ..extras import require

        # the networks are loaded with PyTorch and exported (checked against ONNX Runtime);
        # `pack build --no-onnx` only copies files
        require(f"pack {args.pack_cmd}", ("torch", "safetensors", "onnx"))
    if args.pack_cmd == "build":
        runs = {}
        for comp in COMPONENTS:
            v = getattr(args, comp, None)
            if v:
                runs[comp] = v
        out = build_pack(args.out, runs, name=args.name, version=args.version,
                         trained_on=args.trained_on, overwrite=args.overwrite, box_rule=args.box_rule,
                         box_source=args.box_source, sac_refiner_weight=args.sac_refiner_weight,
                         base=args.base)
        print(f"model pack written to {out}")
        if not args.no_onnx:
            _export(out)
        return 0
    if args.pack_cmd == "export-onnx":
        return _export(args.path)
    pack = load_pack(args.path)
    if args.json:
        print(json.dumps({"path": str(pack.path), "sha256": pack.fingerprint, **pack.manifest}, indent=2))
        return 0
    print(f"{pack.label}  (sha256 {pack.fingerprint}; {pack.path})")
    if pack.manifest.get("trained_on"):
        print(f"trained on: {pack.manifest['trained_on']}")
    for comp, desc in COMPONENTS.items():
        if not pack.has(comp):
            print(f"  {comp:26s} -- not in this pack")
            continue
        info = pack.info(comp)
        print(f"  {comp:26s} {info.get('architecture') or ''}: {desc}")
        if comp == "sac_refiner":
            w = info.get("weight", 1.0)
            how = ("its dural sac replaces the segmenter's" if w == 1 else
                   "its dural sac probability blended with the segmenter's" if is_finite_number(w) and 0 < w < 1
                   else "not a number in (0, 1]: the segmentation will not load")
            print(f"  {'':26s} weight {w!r}: {how}")
        if info.get("training_command"):
            print(f"  {'':26s} trained with: {info['training_command']}")
        m = info.get("metrics") or {}
        flat = {k: v for k, v in m.items() if isinstance(v, (int, float))}
        if flat:
            print(f"  {'':26s} metrics: " + ", ".join(f"{k}={v:.3g}" for k, v in list(flat.items())[:8]))
    return 0


def _export(path) -> int:
    from ..modelpack import export_pack_onnx

    res = export_pack_onnx(path)
    failed = 0
    for comp, rec in res.items():
        if "members" in rec:  # a classifier ensemble: one ONNX file per member
            bad = [r for r in rec["members"] if "error" in r]
            failed += len(bad)
            if bad:
                print(f"  {comp:26s} {len(bad)} of {len(rec['members'])} members not exported (run with torch): "
                      f"{bad[0]['error'].splitlines()[0][:200]}")
            else:
                print(f"  {comp:26s} model.onnx per member ({len(rec['members'])}), largest difference from "
                      f"PyTorch {max(r['max_abs_diff_vs_torch_fp32'] for r in rec['members']):.2g}")
            continue
        if "error" in rec:
            failed += 1
            print(f"  {comp:26s} not exported (runs with torch): {rec['error'].splitlines()[0][:200]}")
        else:
            print(f"  {comp:26s} model.onnx, largest difference from PyTorch {rec['max_abs_diff_vs_torch_fp32']:.2g}")
    return 0 if failed == 0 else 1

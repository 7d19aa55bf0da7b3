"""``lumbargrade pack {info,build}``: show or assemble a model pack."""

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
    b.add_argument("--name", default="lumbargrade-default")
    b.add_argument("--version", default="0.1.0")
    b.add_argument("--trained-on", default="", help="one line: the data the models were trained on")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--box-rule", metavar="FILE_OR_RUN_DIR", help="box_rule.json from `lumbargrade train boxes`")
    for comp in ("segmentation", "landmarks", "landmark-refiner", "tree", "classifier-central", "classifier-central-binary",
                 "classifier-foramen", "classifier-facet"):
        b.add_argument(f"--{comp}", metavar="RUN_DIR")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from ..modelpack import COMPONENTS, build_pack, load_pack

    if args.pack_cmd == "build":
        runs = {}
        for comp in COMPONENTS:
            v = getattr(args, comp, None)
            if v:
                runs[comp] = v
        out = build_pack(args.out, runs, name=args.name, version=args.version,
                         trained_on=args.trained_on, overwrite=args.overwrite, box_rule=args.box_rule)
        print(f"model pack written to {out}")
        return 0
    pack = load_pack(args.path)
    if args.json:
        print(json.dumps({"path": str(pack.path), **pack.manifest}, indent=2))
        return 0
    print(f"{pack.label}  ({pack.path})")
    if pack.manifest.get("trained_on"):
        print(f"trained on: {pack.manifest['trained_on']}")
    for comp, desc in COMPONENTS.items():
        if not pack.has(comp):
            print(f"  {comp:26s} -- not in this pack")
            continue
        info = pack.info(comp)
        print(f"  {comp:26s} {info.get('architecture') or ''}: {desc}")
        if info.get("training_command"):
            print(f"  {'':26s} trained with: {info['training_command']}")
        m = info.get("metrics") or {}
        flat = {k: v for k, v in m.items() if isinstance(v, (int, float))}
        if flat:
            print(f"  {'':26s} metrics: " + ", ".join(f"{k}={v:.3g}" for k, v in list(flat.items())[:8]))
    return 0

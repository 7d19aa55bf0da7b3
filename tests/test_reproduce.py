"""lumbargrade.reproduce: the stage plan (fast), and a tiny end-to-end run that is interrupted and
resumed (slow: it generates a phantom cohort and trains every model for one epoch)."""

from __future__ import annotations

import json

import pytest

from lumbargrade.errors import InputError
from lumbargrade.reproduce import STAGES, ReproduceConfig, plan_commands, run_reproduce


def test_plan_presets_and_scaling(tmp_path):
    fast = plan_commands(ReproduceConfig(out=str(tmp_path), real=None))
    paper = plan_commands(ReproduceConfig(out=str(tmp_path), preset="paper", real=None, epochs_scale=0.5))
    assert set(fast) == {"segmentation", "segmentation_ft1", "segmentation_ft2", "segmentation_ft3", "landmarks",
                         "landmark_refiner",
                         "tree", *(f"classifier_{t}" for t in ("central", "central_binary", "foramen", "facet"))}
    # the fine-tuning phases start from the previous phase's weights, with the same architecture
    ft2 = paper["segmentation_ft2"]
    assert "init_from=" + str(tmp_path / "runs" / "segmentation_ft1") in ft2 and ft2[ft2.index("--model") + 1] == "vnet"
    assert "epochs=3" in ft2  # 6 epochs x --epochs-scale 0.5
    assert "--model" not in fast["segmentation"] and "--model" not in fast["classifier_facet"]
    seg = paper["segmentation"]
    assert seg[seg.index("--model") + 1] == "vnet"
    cls = paper["classifier_central"]
    assert cls[cls.index("--model") + 1] == "bit_r50x1"
    from lumbargrade.segmentation.training import SegConfig

    assert f"epochs={max(1, round(SegConfig().epochs * 0.5))}" in seg
    # the tree is fitted on the trained segmenter's masks
    tree = fast["tree"]
    assert tree[tree.index("--segmentation") + 1].endswith("runs/segmentation_ft3")
    clf = fast["classifier_foramen"]  # patches placed by the trained segmenter, as analyze places them
    assert clf[clf.index("--segmentation") + 1].endswith("runs/segmentation_ft3") and "--box-rule" in clf
    assert STAGES[0] == "cohort" and STAGES[-2:] == ("pack", "evaluate")


def test_recorded_commands_are_relative_to_the_output_folder(tmp_path):
    from lumbargrade.reproduce import _recorded_config, recorded_command

    cfg = ReproduceConfig(out=str(tmp_path / "rep"), real="/srv/data/spider-sagittal", bit_checkpoint="/srv/bit.npz")
    cmds = plan_commands(cfg)
    rec = recorded_command(cmds["landmark_refiner"], cfg.out)
    assert rec[:3] == ["lumbargrade", "train", "landmark-refiner"]
    assert rec[rec.index("--data") + 1] == "cohort" and rec[rec.index("--out") + 1] == "runs/landmark_refiner"
    assert rec[rec.index("--landmarks") + 1] == "runs/landmarks" and rec[rec.index("--real") + 1] == "SPIDER_DIR"
    assert str(tmp_path) not in " ".join(rec)
    for name in cmds:  # every stage, the fine-tunes' --set init_from=RUN included
        assert str(tmp_path) not in " ".join(recorded_command(cmds[name], cfg.out)), name
    ft = recorded_command(cmds["segmentation_ft1"], cfg.out)
    assert "init_from=runs/segmentation" in ft
    d = _recorded_config(cfg)
    assert d["out"] == "." and d["real"] == "SPIDER_DIR" and d["bit_checkpoint"] == "CHECKPOINT_DIR/bit.npz"


def test_bad_settings_are_input_errors(tmp_path):
    with pytest.raises(InputError):
        run_reproduce(ReproduceConfig(out=str(tmp_path), preset="nope"))
    with pytest.raises(InputError):
        run_reproduce(ReproduceConfig(out=str(tmp_path), patients=2))
    with pytest.raises(InputError):
        run_reproduce(ReproduceConfig(out=str(tmp_path)), stop_after="bogus")


def test_rerun_with_other_settings_is_refused(tmp_path):
    (tmp_path / "stages.json").write_text(json.dumps({"settings": ReproduceConfig(out=str(tmp_path), patients=9).key(),
                                                      "stages": {}}))
    with pytest.raises(InputError, match="other settings"):
        run_reproduce(ReproduceConfig(out=str(tmp_path), patients=10), stop_after="cohort")


@pytest.mark.slow
def test_tiny_reproduce_writes_everything_and_resumes(tmp_path):
    out = tmp_path / "rep"
    cfg = ReproduceConfig(out=str(out), patients=5, split=(3, 1, 1), seed=3, tiny=True, n_boot=30)
    doc = run_reproduce(cfg, stop_after="box_rule")  # "interrupted" after five stages
    done = list(doc["stages"])
    assert done == list(STAGES[: STAGES.index("box_rule") + 1])
    assert done[:2] == ["cohort", "segmentation"] and done[-3:] == ["landmarks", "landmark_refiner", "box_rule"]
    first = {k: dict(v) for k, v in doc["stages"].items()}
    assert not (out / "pack").exists()

    logs = []
    doc = run_reproduce(cfg, log=logs.append)
    assert list(doc["stages"]) == list(STAGES)
    for k in done:  # earlier stages skipped: their records are unchanged
        assert doc["stages"][k] == first[k]
        assert any(m.startswith(f"[reproduce] {k}: done earlier") for m in logs)
    stages = json.loads((out / "stages.json").read_text())
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in stages["stages"].values())
    for f in ("tables.md", "metrics.json", "reproduce_config.json", "pack/pack.json", "pack/box_rule.json",
              "evaluation/roc_central.png", "evaluation/roc_foramen.png", "evaluation/roc_facet.png",
              "evaluation/tables.md", "evaluation/levels.csv", "configs/segmentation.json",
              "configs/classifier_facet.json", "configs/box_rule.json"):
        assert (out / f).is_file(), f
    tables = (out / "tables.md").read_text()
    assert "Table 2" in tables and "Table 3" in tables and "Dice, dural sac" in tables
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_patients"] == 1 and m["n_levels"] == 5
    assert m["pipeline_failures"] == []
    for name in m["confusion"]:  # one-epoch models may grade nothing; whatever was graded is drawn
        assert (out / "evaluation" / f"confusion_{name}.png").is_file()
    from lumbargrade.boxes.rule import BoxRuleConfig

    BoxRuleConfig.from_dict(json.loads((out / "pack" / "box_rule.json").read_text()))  # what analyze reads
    pack = json.loads((out / "pack" / "pack.json").read_text())
    assert {"segmentation", "landmarks", "tree", "classifier_facet"} <= set(pack["components"])

    # what the run records names no folder of this machine (the pack included)
    for f in [*out.glob("*.json"), *(out / "pack").rglob("*.json"), *(out / "pack").rglob("command.txt"),
              out / "evaluation" / "metrics.json"]:
        assert str(tmp_path) not in f.read_text(), f

    # a third run does nothing but skip
    logs = []
    run_reproduce(cfg, log=logs.append)
    assert sum("skipped" in m for m in logs) == len(STAGES)

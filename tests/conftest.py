import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

#: The phantom cohort of the end-to-end tests: seed and size fixed, so the studies (and what the
#: tests expect of them) are the same on every run; it holds clearly normal and severe levels.
COHORT_SEED = 31
COHORT_PATIENTS = 4


def pytest_ignore_collect(collection_path: Path, config):
    """``-m core`` (CI's core-install job, where the training extra is not installed): collect
    only the test files that hold core tests, so files importing PyTorch at their top are not
    imported there. Elsewhere every file is collected, and a missing hard dependency fails."""
    if (config.getoption("markexpr") or "").strip() != "core":
        return None
    is_test = collection_path.suffix == ".py" and collection_path.name.startswith("test_")
    if is_test and "pytest.mark.core" not in collection_path.read_text(encoding="utf-8"):
        return True
    return None


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> Path:
    """A phantom cohort (DICOM studies with truth.json and manifest.csv), generated once."""
    from lumbargrade.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, COHORT_PATIENTS, seed=COHORT_SEED, split=(0, 0, COHORT_PATIENTS), progress=False)
    return root


@pytest.fixture(scope="session")
def phantom_patient(phantom_cohort) -> Path:
    """The first patient's folder of :func:`phantom_cohort` (``dicom/``, ``truth.json``)."""
    return min(p for p in phantom_cohort.iterdir() if p.is_dir())

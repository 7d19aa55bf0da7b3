"""The picture-drawing helper process: same results as drawing here, errors come back, a dead
helper falls back to drawing here, and a caller's unguarded script is not run again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lumbargrade.report import drawing_process
from lumbargrade.report.overlays import window


pytestmark = pytest.mark.core  # needs only the inference core


@pytest.fixture(autouse=True)
def fresh_helper(monkeypatch):
    monkeypatch.setattr(drawing_process, "_DISABLED", False)
    monkeypatch.delenv("LUMBARGRADE_DRAWING_PROCESS", raising=False)
    drawing_process.shutdown()
    yield
    drawing_process.shutdown()


def test_the_helper_gives_what_drawing_here_gives():
    img = np.random.default_rng(0).normal(100, 20, (40, 50))
    got = drawing_process.call(window, img, 2.0, 98.0)
    assert drawing_process._PROC is not None and drawing_process._PROC.poll() is None
    np.testing.assert_array_equal(got, window(img, 2.0, 98.0))


def test_an_error_in_the_helper_is_raised_here():
    with pytest.raises(RuntimeError, match="drawing process: ValueError"):
        drawing_process.call(window, "not an image")


def test_a_dead_helper_falls_back_to_drawing_here():
    img = np.arange(12.0).reshape(3, 4)
    drawing_process.start()
    drawing_process._PROC.kill()
    drawing_process._PROC.wait()
    # the dead process is noticed (poll) and a new one started; if that one breaks too, drawing
    # happens here; either way the answer is right
    np.testing.assert_array_equal(drawing_process.call(window, img), window(img))
    proc = drawing_process._PROC
    proc.stdout.close()  # a broken pipe mid-call
    np.testing.assert_array_equal(drawing_process.call(window, img), window(img))
    assert not drawing_process.enabled()


def test_switched_off_it_draws_here(monkeypatch):
    monkeypatch.setenv("LUMBARGRADE_DRAWING_PROCESS", "0")
    img = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(drawing_process.call(window, img), window(img))
    assert drawing_process._PROC is None


def test_an_unguarded_script_is_not_run_again(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from lumbargrade.report import drawing_process
        from lumbargrade.report.overlays import window
        print("script body ran")
        print(int(drawing_process.call(window, np.arange(6.0).reshape(2, 3)).max()))
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["script", "body", "ran", "255"]

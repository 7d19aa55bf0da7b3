"""Errors that describe a user's mistake (bad input), reported as one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError"]


class InputError(Exception):
    """Bad user input: a missing file, a file that is not DICOM, a missing tag, a corrupt image...

    The CLI prints ``lumbargrade: error: <where>: <problem>`` on one line and exits with status 2.

    Parameters
    ----------
    where:
        The file, folder or series (UID or description) that is at fault.
    problem:
        What is wrong with it, in plain words.
    """

    def __init__(self, where: str | Path | None, problem: str) -> None:
        self.where = str(where) if where is not None else None
        self.problem = problem
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        return " ".join(text.split())

"""Errors reported as one line on stderr, never a traceback: a user's mistake (bad input, exit
status 2), an optional install extra that is missing (exit 2) and an output that could not be
written (exit 1)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "MissingExtra", "OutputError"]


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

    def __reduce__(self) -> tuple:  # pickled across processes (worker pools, Ray) whole
        return (self.__class__, (self.where, self.problem))

    def one_line(self) -> str:
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        return " ".join(text.split())


#: Install extras -> the words used for them in messages.
EXTRA_NAMES = {"train": "training"}


class MissingExtra(InputError):
    """A command or option needs an optional install extra that is not installed.

    The CLI prints exactly ``lumbargrade <what> needs the training extra: pip install
    "lumbargrade[train]"`` and exits with status 2.
    """

    def __init__(self, what: str, extra: str = "train", alternative: str | None = None) -> None:
        self.what = what
        self.extra = extra
        self.alternative = alternative
        alt = f" (or {alternative})" if alternative else ""
        super().__init__(None, f'lumbargrade {what} needs the {EXTRA_NAMES.get(extra, extra)} extra: '
                               f'pip install "lumbargrade[{extra}]"{alt}')

    def __reduce__(self) -> tuple:
        return (self.__class__, (self.what, self.extra, self.alternative))


class OutputError(Exception):
    """An output (report.json, a DICOM SEG or SR, report.html...) could not be written.

    The CLI prints ``lumbargrade: error: <output>: <cause>`` on one line and exits with status 1;
    a batch marks the study failed in its log (and analyzes it again on the next run).
    """

    def __init__(self, output: str | Path, cause: str) -> None:
        self.output = str(output)
        self.cause = cause
        super().__init__(self.one_line())

    def __reduce__(self) -> tuple:
        return (self.__class__, (self.output, self.cause))

    def one_line(self) -> str:
        return " ".join(f"{self.output}: {self.cause}".split())

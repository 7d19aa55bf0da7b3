"""The ``lumbargrade`` command line.

Each subcommand lives in :mod:`lumbargrade.commands.<name>` and defines ``register(subparsers)``
(which only adds an argparse parser, so it is cheap) and ``run(args) -> int`` (which imports what
it needs). Commands are discovered from that package, so adding one touches no shared file.

A user's mistake (:class:`lumbargrade.errors.InputError`) is printed as one line on stderr and
gives exit status 2, never a traceback; so is a command that needs an install extra which is
missing (:class:`lumbargrade.errors.MissingExtra`, also when a module of the extra turns out to be
missing only on import). An output that cannot be written
(:class:`lumbargrade.errors.OutputError`) is one line and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from . import __version__
from .errors import InputError, MissingExtra, OutputError

__all__ = ["main", "build_parser"]


def _command_modules() -> list[str]:
    from . import commands

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lumbargrade",
        description="Grade lumbar central canal stenosis, foraminal stenosis and facet arthropathy "
        "on axial T2 MRI, with measurements a radiologist can check.",
    )
    parser.add_argument("--version", action="version", version=f"lumbargrade {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"lumbargrade.commands.{name}")
        p = module.register(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except MissingExtra as e:
        if e.what.startswith("-"):  # an option (--runtime torch): name the command it was given to
            e = MissingExtra(f"{_command_words(args)} {e.what}", e.extra, e.alternative)
        print(e.one_line(), file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # a module of an extra, imported deep inside a command
        from .extras import TRAIN_MODULES

        if (e.name or "").split(".")[0] not in TRAIN_MODULES:
            raise
        print(MissingExtra(_command_words(args)).one_line(), file=sys.stderr)
        return 2
    except OutputError as e:
        print(f"lumbargrade: error: {e.one_line()}", file=sys.stderr)
        return 1
    except InputError as e:
        print(f"lumbargrade: error: {e.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lumbargrade: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _command_words(args: argparse.Namespace) -> str:
    """'train', 'pack export-onnx'...: the subcommand a user ran, for messages."""
    words = [str(args.command)]
    if args.command == "pack" and getattr(args, "pack_cmd", None):
        words.append(str(args.pack_cmd))
    return " ".join(words)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

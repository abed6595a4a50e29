"""The subcommands of ``sfvq`` (:func:`sfvq_ext.cli.main`), one module per concern:
:mod:`.check` (check, demo), :mod:`.fit`, :mod:`.quantize`, :mod:`.runs` (render, edit,
augment, explore) and :mod:`.generators` (the --generator options they share). Each
module's ``add_commands(commands)`` registers its subparsers, whose ``run`` default is
called with the parsed arguments and returns the exit code.

At module level these import only the standard library, numpy and torch (which
``import sfvq_ext`` loads anyway); what a command alone needs (matplotlib, PIL, the
generator adapters, the explorer page, tqdm) is imported when that command runs."""

from __future__ import annotations

import json
from pathlib import Path


def write_record(path: Path, record: dict) -> None:
    """``record`` as indented JSON at ``path``, written atomically."""
    from sfvq_ext.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(record, indent=2).encode())

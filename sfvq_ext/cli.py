"""Command-line interface: ``sfvq <command>``.

The commands live in :mod:`sfvq_ext.commands`, one module per concern. Each imports
what only it needs (matplotlib, PIL, the generator adapters, the explorer page) when
it runs, so ``sfvq --help`` or ``sfvq quantize`` pays for torch and this package only."""

from __future__ import annotations

import argparse
import sys

from sfvq_ext.commands import check, fit, quantize, runs


def main(argv: list[str] | None = None) -> int:
    """Run ``sfvq`` with ``argv`` (default: the command line); returns the exit code.
    Bad input (ValueError, TypeError, FileNotFoundError) exits with code 2 and one line."""
    parser = argparse.ArgumentParser(prog="sfvq", description="Space-filling vector quantization tools")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (check, fit, quantize, runs):
        module.add_commands(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:  # bad input: one line, not a traceback
        parser.exit(2, f"sfvq {args.command}: error: {' '.join(str(err).split())}\n")


if __name__ == "__main__":
    sys.exit(main())

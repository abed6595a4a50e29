"""Command-line interface: ``sfvq <command>``."""

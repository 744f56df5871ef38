"""Command entry point: ``python -m minideit.reproduce`` runs :mod:`minideit.tools.reproduce.cli`."""
import sys

from minideit.tools.reproduce.cli import main

if __name__ == "__main__":
    sys.exit(main())

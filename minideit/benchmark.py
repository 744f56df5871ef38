"""Command entry point: ``python -m minideit.benchmark`` runs :mod:`minideit.tools.bench.cli`."""
import sys

from minideit.tools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Command entry point: ``python -m minideit.exercises`` runs :mod:`minideit.tools.exercises.__main__`."""
import sys

from minideit.tools.exercises.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

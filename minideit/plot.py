"""Command entry point: ``python -m minideit.plot`` runs :mod:`minideit.tools.plot`."""
import sys

from minideit.tools.plot import main

if __name__ == "__main__":
    sys.exit(main())

"""Command entry point: ``python -m minideit.figures`` runs :mod:`minideit.tools.figures`."""
import sys

from minideit.tools.figures import main

if __name__ == "__main__":
    sys.exit(main())

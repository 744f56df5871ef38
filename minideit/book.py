"""Command entry point: ``python -m minideit.book`` runs :mod:`minideit.tools.book`."""
import sys

from minideit.tools.book import main

if __name__ == "__main__":
    sys.exit(main())

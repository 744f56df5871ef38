"""Command entry point: ``python -m minideit.predict`` runs :mod:`minideit.tools.predict`."""
import sys

from minideit.tools.predict import main

if __name__ == "__main__":
    sys.exit(main())

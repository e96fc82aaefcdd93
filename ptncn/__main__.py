"""``python -m ptncn``: the ``ptncn`` command (:func:`ptncn.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

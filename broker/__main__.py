"""``python -m broker``: the same entry point as the ``moldau`` console script."""

import sys

from broker.cli import main

sys.exit(main())

"""``python -m unetseg``: the same as the ``unetseg`` command."""

import sys

from .cli import main

sys.exit(main())

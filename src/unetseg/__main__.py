"""``python -m unetseg``: the same as the ``unetseg`` command."""

import sys

from unetseg.cli import main

sys.exit(main())

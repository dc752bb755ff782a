"""The ``unetseg`` command: one module per subcommand, each with ``add_arguments`` and ``run``.

Every Snakemake rule runs one of these subcommands; ``unetseg predict`` segments a single
image of any size with a trained model, outside the workflow.
"""

from unetseg.cli.app import main

__all__ = ["main"]

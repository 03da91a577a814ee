"""The ``layerflow`` command group; each command lives in the module of its kind."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="layerflow")
def main() -> None:
    """Run a graph of tasks and parallelize whatever is independent, automatically."""

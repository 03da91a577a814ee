"""``python -m layerflow``: the same as the ``layerflow`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="layerflow")

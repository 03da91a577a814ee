"""A worker process of the process backend: ``python -m layerflow.backends._worker R W``.

R and W are the pipe file descriptors the parent passed down. The loop lives in
``process.py``; importing it from there (not running that module as ``__main__``) keeps
the errors it sends back picklable by reference to their real module.
"""

import sys
from multiprocessing.connection import Connection

from layerflow.backends.process import _child_main

if __name__ == "__main__":
    _child_main(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )

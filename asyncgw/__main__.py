"""``python -m asyncgw``: the command line (see :mod:`asyncgw.cli`), the
same as the ``asyncgw`` console script: ``run``, ``put``, ``get``,
``exec``, and ``serve [--host H] [--port P] [--secret-file F] [--cert C
--key K] [--plaintext]`` for a socket server (:mod:`asyncgw.server`, which
also runs on its own as a copied file: ``python server.py ...``; only
``serve`` run this way makes a missing certificate and key)."""

from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

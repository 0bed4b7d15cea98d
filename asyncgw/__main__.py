"""``python -m asyncgw serve [--host H] [--port P] [--secret-file F]``: run a
socket server (see :mod:`asyncgw.server`, which also runs on its own as a
copied file: ``python server.py ...``)."""

from __future__ import annotations

import sys

from . import server


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "serve":
        raise SystemExit("usage: python -m asyncgw serve [--host H] [--port P] [--secret-file F]")
    server.main(args[1:])


if __name__ == "__main__":
    main()

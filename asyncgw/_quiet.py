"""Warnings of other packages that asyncgw's users should not see.

asyncssh (2.24) reads cryptography's DSA names when it is imported, and
cryptography 51 deprecates them: a warning on every run of the command line,
and an error under ``-W error``, about nothing asyncgw's caller did. Only that
warning, only from asyncssh's modules, is ignored. Imported first by
``asyncgw/__init__.py``, so before anything in asyncgw imports asyncssh.
"""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")

"""asyncgw: start Python interpreters elsewhere, ship them code, talk over channels.

The async API lives here; the blocking, execnet-compatible one in
:mod:`asyncgw.sync`.
"""

from __future__ import annotations

from . import (
    _quiet,  # noqa: F401 - first: before anything imports asyncssh
    objects,  # noqa: F401 - registers the objects layer's services with the core (_hooks)
)
from ._channel import NO_ENDMARKER, Channel, MultiChannel
from ._errors import (
    AsyncgwError,
    AuthenticationError,
    BootstrapError,
    ChannelClosed,
    ChannelError,
    ChannelIOError,
    DataFormatError,
    DumpError,
    GatewayError,
    GatewayLost,
    HostKeyError,
    HostNotFound,
    LoadError,
    ProtocolError,
    RemoteError,
    SpecError,
    TimeoutError,
)
from ._gateway import Gateway
from ._group import Group, default_group, makegateway
from ._spec import XSpec
from ._supervision import Death, RestartPolicy
from ._wire import dumps, loads
from .pool import Pool
from .slurm import slurm_specs

__version__ = "0.1.0"

__all__ = [
    "NO_ENDMARKER",
    "AsyncgwError",
    "AuthenticationError",
    "BootstrapError",
    "Channel",
    "ChannelClosed",
    "ChannelError",
    "ChannelIOError",
    "DataFormatError",
    "Death",
    "DumpError",
    "Gateway",
    "GatewayError",
    "GatewayLost",
    "Group",
    "HostKeyError",
    "HostNotFound",
    "LoadError",
    "MultiChannel",
    "Pool",
    "ProtocolError",
    "RemoteError",
    "RestartPolicy",
    "SpecError",
    "TimeoutError",
    "XSpec",
    "default_group",
    "dumps",
    "loads",
    "makegateway",
    "slurm_specs",
]

"""The fleet: commands and file copies on many hosts at once, execo's way.

Async here; the blocking twins are in :mod:`asyncgw.sync`. See
:mod:`.actions` for the model, :mod:`.hosts` for hosts and connection
parameters, :mod:`.nodeset` for host patterns.
"""

from __future__ import annotations

from .actions import Action, Local, ParallelActions, Remote, SequentialActions, get_targets
from .hosts import Host, default_connection_params, get_hosts_list
from .nodeset import expand, fold
from .process import STDERR, STDOUT, LocalProcess, Process, TransferProcess
from .remoteprocess import GatewayProcess, RelayedSshProcess, SshProcess
from .report import Report
from .substitution import remote_substitute
from .transfers import Get, Put

__all__ = [
    "STDERR",
    "STDOUT",
    "Action",
    "GatewayProcess",
    "Get",
    "Host",
    "Local",
    "LocalProcess",
    "ParallelActions",
    "Process",
    "Put",
    "RelayedSshProcess",
    "Remote",
    "Report",
    "SequentialActions",
    "SshProcess",
    "TransferProcess",
    "default_connection_params",
    "expand",
    "fold",
    "get_hosts_list",
    "get_targets",
    "remote_substitute",
]

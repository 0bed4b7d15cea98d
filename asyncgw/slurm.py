"""Gateways over a Slurm allocation: one spec per node (or per task) of the job.

``Group(slurm_specs(per_node=1))``, run inside ``salloc`` or ``sbatch``,
starts one ``slurm=`` gateway on each allocated node, in parallel; the
executor (:class:`asyncgw.Pool`) and :class:`asyncgw.fleet.Remote` then run
across the allocation with the same code as on SSH hosts.

This module sits above the core: it reads ``SLURM_JOB_NODELIST`` with the
fleet's node-set code (:mod:`asyncgw.fleet.nodeset`, imported on first use,
as the fleet is heavy), so that the ``slurm=`` transport itself needs no part
of the fleet. Each spec pins its step to one node with ``--nodelist`` and
names the gateway after it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping

from ._errors import SpecError

__all__ = ["allocation_nodes", "slurm_specs", "tasks_per_node"]

_TASKS = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def allocation_nodes(environ: Mapping[str, str] | None = None) -> list[str]:
    """The nodes of the current allocation, in Slurm's order.

    :raises SpecError: outside an allocation (no ``SLURM_JOB_NODELIST``), or
        for a node list the node-set syntax cannot read.
    """
    environ = os.environ if environ is None else environ
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        raise SpecError(
            "not inside a Slurm allocation (SLURM_JOB_NODELIST is not set): run under"
            " salloc or sbatch, or give slurm= specs of your own"
        )
    if "@" in nodelist:  # the node-set syntax would read a file: not a Slurm list
        raise SpecError(f"SLURM_JOB_NODELIST {nodelist!r} is not a Slurm node list")
    from .fleet.nodeset import expand  # a layer above the core, and heavy

    try:
        return expand(nodelist)
    except ValueError as exc:
        raise SpecError(f"SLURM_JOB_NODELIST {nodelist!r}: {exc}") from None


def tasks_per_node(environ: Mapping[str, str] | None = None) -> list[int]:
    """``SLURM_TASKS_PER_NODE`` (``2(x3),1``) unfolded: tasks of each node, in order.

    :raises SpecError: if it is missing or malformed.
    """
    environ = os.environ if environ is None else environ
    value = environ.get("SLURM_TASKS_PER_NODE", "")
    counts: list[int] = []
    for part in value.split(","):
        match = _TASKS.fullmatch(part.strip())
        if not match:
            raise SpecError(f"SLURM_TASKS_PER_NODE {value!r} is not Slurm's N(xM),... form")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def slurm_specs(
    per_node: int | None = 1,
    *,
    options: str = "",
    extra: str = "",
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """``slurm=`` specs for the current allocation: ``per_node`` gateways on
    each node (None: as many as the job has tasks there), ids ``NODE`` (or
    ``NODE.i`` with several per node).

    :param options: more srun options for every step (``--mem=1G``).
    :param extra: more spec keys, appended as they are (``python=python3``).
    :param environ: where to read ``SLURM_*`` (default: ours).
    :raises SpecError: outside an allocation, for a bad ``per_node``, or for
        Slurm variables that cannot be read.
    """
    nodes = allocation_nodes(environ)
    if per_node is None:
        counts = tasks_per_node(environ)
        if len(counts) != len(nodes):
            raise SpecError(
                f"SLURM_TASKS_PER_NODE names {len(counts)} nodes, SLURM_JOB_NODELIST {len(nodes)}"
            )
    elif isinstance(per_node, int) and per_node >= 1:
        counts = [per_node] * len(nodes)
    else:
        raise SpecError(f"per_node is a count of at least 1 (or None), not {per_node!r}")
    if "//" in options:
        raise SpecError(f"srun options {options!r} may not hold '//'")
    try:
        shlex.split(options)  # fails here, not in every gateway, on unbalanced quotes
    except ValueError as exc:
        raise SpecError(f"srun options {options!r}: {exc}") from None
    specs = []
    for node, count in zip(nodes, counts, strict=True):
        for index in range(count):
            name = node if count == 1 else f"{node}.{index}"
            spec = f"slurm=--nodelist={node}{' ' + options if options else ''}//id={name}"
            specs.append(f"{spec}//{extra}" if extra else spec)
    return specs

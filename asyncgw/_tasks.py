"""Structured concurrency helpers shared by groups and multichannels."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

__all__ = ["run_all"]

T = TypeVar("T")


async def run_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Await all concurrently in a TaskGroup; results in order.

    On failure the others are cancelled and the first error is raised as
    itself (not in an ExceptionGroup), with a note counting the rest.
    Cancelling the caller cancels them all.
    """

    async def wrap(awaitable: Awaitable[T]) -> T:
        return await awaitable

    try:
        async with asyncio.TaskGroup() as tasks:
            pending = [tasks.create_task(wrap(awaitable)) for awaitable in awaitables]
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        if len(group.exceptions) > 1:
            first.add_note(f"({len(group.exceptions) - 1} more concurrent failures)")
        raise first from None
    return [task.result() for task in pending]

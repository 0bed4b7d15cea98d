"""A third-party transport, installed as an entry point, is found by its
spec key and serves gateways like a built-in one."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import asyncgw
from asyncgw import transports

pytestmark = pytest.mark.anyio

PLUGIN = '''
"""A transport that runs popen workers and counts what it opened."""
from asyncgw.transports.popen import popen_argv, start_process

opened = []

async def open_counted(spec, sink, bootstrap, context):
    opened.append(spec.counted)
    return await start_process(popen_argv(spec), spec, sink, bootstrap)
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "counted_transport.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "counted_transport-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: counted-transport\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[asyncgw.transports]\ncounted = counted_transport:open_counted\n"
        "broken = counted_transport:no_such_name\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    transports.plugin_transports.cache_clear()
    yield
    transports.plugin_transports.cache_clear()


async def test_plugin_transport_serves_gateways(installed_plugin: None) -> None:
    import counted_transport  # type: ignore[import-not-found]

    spec = asyncgw.XSpec("counted=yes//id=plug")
    assert spec.transport == "counted"
    async with asyncgw.Group() as group:
        gw = await group.makegateway(spec)
        channel = gw.remote_exec("channel.send(6 * 7)")
        assert await channel.receive() == 42
    assert counted_transport.opened == ["yes"]


async def test_broken_plugin_and_unknown_keys(installed_plugin: None) -> None:
    async with asyncgw.Group() as group:
        with pytest.raises(asyncgw.SpecError, match="failed to load"):
            await group.makegateway("broken")
    with pytest.raises(asyncgw.SpecError, match="unknown key 'uncounted'"):
        asyncgw.XSpec("uncounted=1").validate()

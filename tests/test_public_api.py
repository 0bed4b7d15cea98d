"""The public surface is exactly ``__all__``, and the error tree is DESIGN §3."""

from __future__ import annotations

import builtins

import asyncgw


def test_all_matches_public_names() -> None:
    public = {name for name in vars(asyncgw) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(asyncgw, name)).__name__ == "module"}
    assert (
        sorted(asyncgw.__all__) == asyncgw.__all__
        or sorted(asyncgw.__all__, key=lambda n: (not n.isupper(), n)) == asyncgw.__all__
    )
    assert set(asyncgw.__all__) == public - modules - {"annotations"}


def test_error_tree() -> None:
    tree = {
        asyncgw.GatewayError: asyncgw.AsyncgwError,
        asyncgw.HostNotFound: asyncgw.GatewayError,
        asyncgw.AuthenticationError: asyncgw.GatewayError,
        asyncgw.HostKeyError: asyncgw.GatewayError,
        asyncgw.BootstrapError: asyncgw.GatewayError,
        asyncgw.GatewayLost: asyncgw.GatewayError,
        asyncgw.ChannelError: asyncgw.AsyncgwError,
        asyncgw.ChannelClosed: asyncgw.ChannelError,
        asyncgw.RemoteError: asyncgw.ChannelError,
        asyncgw.ChannelIOError: asyncgw.ChannelError,
        asyncgw.ProtocolError: asyncgw.AsyncgwError,
        asyncgw.DataFormatError: asyncgw.AsyncgwError,
        asyncgw.DumpError: asyncgw.DataFormatError,
        asyncgw.LoadError: asyncgw.DataFormatError,
        asyncgw.TimeoutError: asyncgw.AsyncgwError,
        asyncgw.SpecError: asyncgw.AsyncgwError,
    }
    for cls, parent in tree.items():
        assert issubclass(cls, parent), cls
        assert cls.__doc__ and "raised" in cls.__doc__.lower(), cls
    assert issubclass(asyncgw.ChannelClosed, EOFError)
    assert issubclass(asyncgw.GatewayLost, EOFError)  # as execnet's lost channels
    assert issubclass(asyncgw.GatewayLost, OSError)  # ... on send
    assert issubclass(asyncgw.ChannelIOError, OSError)  # execnet's IOError
    assert issubclass(asyncgw.TimeoutError, builtins.TimeoutError)
    for cls in tree:  # no class shadows a builtin without subclassing it
        if hasattr(builtins, cls.__name__):
            assert issubclass(cls, getattr(builtins, cls.__name__))

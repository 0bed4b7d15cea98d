"""Sent whole by ``remote_exec(module)`` in test_gateway; runs remotely."""

if __name__ == "__channelexec__":
    request = channel.receive()  # type: ignore[name-defined]  # noqa: F821
    channel.send(("pong" if request == "ping" else "?", __name__))  # type: ignore[name-defined]  # noqa: F821

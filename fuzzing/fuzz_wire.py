"""Coverage-guided fuzzing of the wire decoders (atheris / libFuzzer).

    python fuzzing/fuzz_wire.py -max_total_time=600 -max_len=4096 fuzzing/corpus

Each input drives three checks:

- ``FrameDecoder`` with a small ``max_payload`` taken from the input, fed
  the rest in pieces whose sizes also come from the input: only
  ``ProtocolError`` may escape, and the frames must equal those of feeding
  the same bytes whole (splitting never changes the result);
- ``loads`` on the bytes: only ``LoadError`` may escape, and a value that
  decodes must encode back to bytes that decode to an equal encoding;
- ``decode_ack``: only ``ProtocolError``.

An address-space limit turns unbounded allocation into a MemoryError, which
is reported as a crash like any other escaping exception.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys

import atheris

with atheris.instrument_imports():
    from asyncgw import _wire

#: Address space the fuzzed process may use: a decoder that allocates what
#: a hostile length claims, instead of what arrived, hits it at once.
MEMORY_LIMIT = 2 << 30


def frames_of(data: bytes, max_payload: int, cuts: list[int]) -> tuple[list[object], str | None]:
    decoder = _wire.FrameDecoder(max_payload)
    frames: list[object] = []
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            frames += decoder.feed(data[pos : pos + cut])
            pos += cut
            if pos >= len(data):
                break
    except _wire.ProtocolError as exc:
        return frames + list(exc.frames), str(exc)
    return frames, None


def check(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    max_payload = provider.ConsumeIntInRange(0, 1 << 20)
    cuts = [provider.ConsumeIntInRange(1, 64) for _ in range(provider.ConsumeIntInRange(0, 8))]
    stream = provider.ConsumeBytes(provider.remaining_bytes())

    whole = frames_of(stream, max_payload, [])
    split = frames_of(stream, max_payload, cuts)
    if whole != split:
        raise AssertionError(f"splitting changed the frames: {whole!r} != {split!r}")

    try:
        value = _wire.loads(stream)
    except _wire.LoadError:
        pass
    else:
        encoded = _wire.dumps(value)
        if _wire.dumps(_wire.loads(encoded)) != encoded:
            raise AssertionError(f"round trip changed {value!r}")

    with contextlib.suppress(_wire.ProtocolError):
        _wire.decode_ack(stream)


def seed(corpus: str) -> None:
    """Valid frames and values to start from, if the corpus is empty."""
    os.makedirs(corpus, exist_ok=True)
    if os.listdir(corpus):
        return
    values: list[object] = [
        None, True, 1, -(2**70), 1.5, 2j, "é", b"\x00", [1, (2, 3)], {"k": {4, 5}},
        frozenset({b"x"}), [[[[[]]]]],
    ]  # fmt: skip
    for index, value in enumerate(values):
        payload = _wire.dumps(value)
        with open(os.path.join(corpus, f"value-{index}"), "wb") as stream:
            stream.write(b"\x00\x10\x00" + payload)
        frame = _wire.encode_frame(_wire.DATA, index, payload)
        with open(os.path.join(corpus, f"frame-{index}"), "wb") as stream:
            stream.write(b"\x00\x10\x00\x02" + frame + _wire.encode_frame(_wire.ACK, 1, b"\0" * 8))


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    corpora = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    for corpus in corpora:
        seed(corpus)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

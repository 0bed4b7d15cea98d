"""What a fake worker script (a hostile or broken peer written on purpose)
runs first: read the bootstrap asyncgw writes to a fresh interpreter's
stdin — stage 2, then the worker's sources it announces as
``_sources = _take(N)`` — so that the next byte read is the first frame.
A fake that stopped after stage 2 would take a byte of the sources for
that frame, and answer before the local side has sent anything."""

#: Lines for the fake's script; ``sys`` must be imported before them.
SKIP_BOOTSTRAP = (
    "import re\n"
    "_stage2 = sys.stdin.buffer.read(int(sys.stdin.buffer.read(10)))  # the bootstrap\n"
    "sys.stdin.buffer.read(int(re.search(rb'_sources = _take\\((\\d+)\\)', _stage2).group(1)))\n"
)

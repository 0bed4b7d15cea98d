"""The example notebook, executed end to end by a real Jupyter kernel."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import nbclient
import nbformat

from tests.test_examples import check_stored

NOTEBOOK = Path(__file__).parent.parent / "examples" / "jupyter.ipynb"


def _outputs(notebook: object) -> str:
    text = []
    for cell in notebook.cells:  # type: ignore[attr-defined]
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            text.append(output.get("text", ""))
    return "".join(text)


def _commented(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.splitlines())


def transcript(notebook: object) -> str:
    """The cells and their outputs as a percent-format script: what the
    docs show of the notebook (``docs/examples/jupyter.txt``)."""
    parts = []
    for cell in notebook.cells:  # type: ignore[attr-defined]
        if cell.cell_type == "markdown":
            parts.append(f"# %% [markdown]\n{_commented(cell.source)}")
        elif cell.cell_type == "code":
            out = "".join(
                output.get("text", "") or output.get("data", {}).get("text/plain", "")
                for output in cell.get("outputs", [])
            )
            parts.append(f"# %%\n{cell.source}" + (f"\n# Out:\n{_commented(out)}" if out else ""))
    return "\n\n".join(parts) + "\n"


def test_notebook_runs_async_and_sync_apis() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3")
    client.execute(cwd=str(NOTEBOOK.parent))
    out = _outputs(notebook)
    assert "async answer: 42" in out
    assert "remote pid differs: True" in out
    assert "<Group ['gw0', 'gw1']>" in out
    assert "sync ids: ['gw0', 'gw1']" in out
    assert "squares: [0, 1, 4, 9, 16]" in out
    assert out.rstrip().endswith("<Group []>")
    check_stored(
        "jupyter.txt", "# examples/jupyter.ipynb, run by a Jupyter kernel", transcript(notebook)
    )


def _docs_logs_cell() -> tuple[str, list[str]]:
    """The forward_logs cell of docs/howto/jupyter.rst and the lines the
    page says it prints."""
    text = (Path(__file__).parent.parent / "docs" / "howto" / "jupyter.rst").read_text()
    section = text[text.index("Remote output and logs in the notebook") :]
    blocks = re.findall(r"\.\. code-block:: (\w+)\n\n((?:    .*\n|\n)+)", section)
    (lang, code), (out_lang, out) = blocks[0], blocks[1]
    assert (lang, out_lang) == ("python", "text")
    return textwrap.dedent(code).strip(), textwrap.dedent(out).strip().splitlines()


def test_docs_forward_logs_cell_prints_under_its_cell() -> None:
    """The page's forward_logs cell, run as it is in a kernel, prints the
    remote records under that cell: not after it has ended."""
    code, expected = _docs_logs_cell()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import asyncgw"),
        nbformat.v4.new_code_cell(code),
        nbformat.v4.new_code_cell("await lgroup.terminate()"),
    ]
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3")
    client.execute(cwd=str(NOTEBOOK.parent))
    cell = notebook.cells[1]
    assert all(output["output_type"] != "error" for output in cell.outputs), cell.outputs
    printed = "".join(output.get("text", "") for output in cell.outputs)
    for line in expected:
        assert line in printed, (line, printed)


def test_flush_logs_returns_after_every_record_made_before_it() -> None:
    """Outside a notebook too: once ``flush_logs`` returns, every record and
    line (a partial one included) made before it has been handled here."""
    import asyncio
    import logging

    import asyncgw
    from asyncgw.objects.logs import flush_logs

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    keep = Keep()
    logger = logging.getLogger("asyncgw.remote.flushed")
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    code = (
        "import logging, sys\n"
        "for n in range(3000): logging.getLogger('job').info('record %d', n)\n"
        "sys.stdout.write('a partial line')\n"
    )

    async def main() -> None:
        async with asyncgw.Group(forward_logs=True) as group:
            gw = await group.makegateway("popen//id=flushed")
            await flush_logs(gw)  # nothing made yet: returns
            await gw.remote_exec(code).waitclose()
            await flush_logs(gw)
            assert keep.messages[-1] == "a partial line", keep.messages[-3:]
            assert [m for m in keep.messages if m.startswith("record")] == [
                f"record {n}" for n in range(3000)
            ]
        await flush_logs(gw)  # forwarding has ended: returns

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        logger.removeHandler(keep)

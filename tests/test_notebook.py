"""The example notebook, executed end to end by a real Jupyter kernel."""

from __future__ import annotations

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

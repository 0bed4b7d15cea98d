"""The example notebook, executed end to end by a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).parent.parent / "examples" / "jupyter.ipynb"


def _outputs(notebook: object) -> str:
    text = []
    for cell in notebook.cells:  # type: ignore[attr-defined]
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            text.append(output.get("text", ""))
    return "".join(text)


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

"""examples/colab.ipynb runs end to end (on the CPU, with a tiny study), so it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[1] / "examples" / "colab.ipynb"


def test_colab_notebook_executes(tmp_path, documents, tokenizer_dir):
    nbformat = pytest.importorskip("nbformat", reason="nbformat (dev extra) not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient (dev extra) not installed")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    study = tmp_path / "study.yaml"
    study.write_text(f"""\
name: colab-test
data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
baseline:
  model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
  train: {{batch_size: 4, seq_len: 16, max_steps: 4, warmup_steps: 1, eval_every: 2,
          eval_tokens: 128, log_every: 2}}
variants:
  high_lr: {{learning_rate: 1.0e-2}}
samples: {{prompts: [Hi], max_new_tokens: 3}}
""")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(c for c in notebook.cells if c.source.startswith("# Parameters"))
    parameters.source = (
        f"INSTALL = False\nSOURCE = ''\nSTUDY = {str(study)!r}\n"
        f"OUT = {str(tmp_path / 'out')!r}\nOVERRIDES = []\nSEEDS = 2"
    )
    nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = "".join(
        o.get("text", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "best_performing_config:" in outputs and "verdicts:" in outputs
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) == 4
    assert (tmp_path / "out" / "report" / "research_report.md").is_file()

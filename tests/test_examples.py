"""The examples run, so they cannot rot: the quickstart notebook's code and the main job."""
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")


def test_quickstart_notebook_code_runs(tmp_path):
    notebook = json.loads((EXAMPLES / "quickstart.ipynb").read_text())
    code = "\n\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    script = tmp_path / "quickstart.py"
    script.write_text(code + "\nassert model.history['early_stop']['stopped_by'] in ('ari', 'epochs')\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical embedding after load: True" in result.stdout
    assert (tmp_path / "quickstart_model" / "model.pt").exists()


def test_main_job_runs(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "osmfish.py"), "--epochs", "3"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cells"] == 4839 and 0 <= summary["ari_vs_regions"] <= 1

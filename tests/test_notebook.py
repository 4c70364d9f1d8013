"""DCGAN.ipynb runs top to bottom (nbclient, tiny settings) and shows its pictures inline."""

import importlib.util
import json

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOK = ROOT / "DCGAN.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert "data/data39207/img_align_celeba.zip" in "".join(code[0]["source"])


def test_notebook_runs_end_to_end(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = nb.cells[[c.cell_type for c in nb.cells].index("code")]
    assert "parameters" in params.metadata["tags"]
    visualdl = importlib.util.find_spec("visualdl") is not None
    params.source = (
        f'import importlib.util\nDATA = "{tmp_path}/demo64.npy"\nOUT = "{tmp_path}/out"\nEPOCHS = 2\n'
        'MAX_ITERS = 6\nCHUNKS = 2\nBATCH_SIZE = 16\nNGF = NDF = 8\nEMA = 0.9\nDEVICE = "cpu"\nNUM_EVAL = 32\n'
        f'FID_WEIGHTS = "{tmp_path}/no_inception.pth"\nCOMPLETE_ITERS = 5\nVISUALDL = {visualdl}\n'
    )
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except Exception as e:  # nbclient's CellExecutionError carries the cell's traceback
        pytest.fail(f"notebook cell failed:\n{str(e)[-3000:]}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # batch, 2 training grids, losses, real vs fake, faces, interpolation, completion, 2 arithmetic grids
    assert len(images) >= 10
    text = "".join(o.get("text", "") for o in outputs)
    assert "after 3 iterations" in text and "after 6 iterations" in text and "face rate" in text
    assert "requirements.txt: all installed" in text and "losses finite" in text  # install cell, train.check
    if visualdl:
        assert "D loss at iterations 1-6, 2 sample grids" in text, text
    else:
        assert "VisualDL is not installed" in text
    assert "FID / KID skipped: no" in text and "generator.safetensors metadata:" in text and "'nz': 100" in text
    assert "G: nz 100, ngf 8; D: ndf 8" in text
    assert all(f"{name:<11} hole PSNR" in text for name in ("DCGAN", "biharmonic", "mean fill"))
    assert (tmp_path / "demo64.npy").is_file() and (tmp_path / "out" / "generator.safetensors").is_file()

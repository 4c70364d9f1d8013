"""Nothing changes for users: the golden run (tests/golden_run.py) gives the fingerprint recorded in
tests/data/golden_run.json, bit for bit on the machine it was recorded on, within a tolerance elsewhere."""

import json

import pytest

import golden_run


@pytest.mark.parametrize("backend", list(golden_run.BACKENDS))
def test_golden_run_is_unchanged(tmp_path, backend):
    if backend.startswith("onednn"):
        import onednn_conv

        if not onednn_conv.available():
            pytest.skip(f"oneDNN convolutions unavailable here: {onednn_conv.status()}")
    golden = json.loads(golden_run.GOLDEN.read_text())
    exact = golden["machine"] == golden_run.machine()
    problems = golden_run.compare(golden["backends"][backend], golden_run.run(backend, tmp_path), exact)
    assert not problems, f"{len(problems)} differences ({'exact' if exact else 'tolerance'}):\n" + "\n".join(
        problems[:20]
    )

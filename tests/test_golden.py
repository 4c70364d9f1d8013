"""Nothing changes for users: the golden run (tests/golden_run.py) gives the fingerprint recorded in
tests/data/golden_run.json, bit for bit on a processor it was recorded on, within a tolerance elsewhere."""

import json

import pytest

import golden_run


@pytest.mark.parametrize("backend", list(golden_run.BACKENDS))
def test_golden_run_is_unchanged(tmp_path, backend):
    if backend.startswith("onednn"):
        import onednn_conv

        if not onednn_conv.available():
            pytest.skip(f"oneDNN convolutions unavailable here: {onednn_conv.status()}")
    how, problems = golden_run.check(backend, golden_run.run(backend, tmp_path))
    assert not problems, f"{len(problems)} differences ({how}):\n" + "\n".join(problems[:20])


def _fp(shift: float, weight: float, bits: str = "a") -> dict:
    """A two-entry fingerprint: a BatchNorm shift and a convolution weight, each with l1 1."""
    return {
        "G/main.1.bias": {"sha256": bits, "sum": shift, "l1": 1.0, "n": 4},
        "G/main.0.weight": {"sha256": bits, "sum": weight, "l1": 1.0, "n": 4},
    }


def test_compare_exactly_or_within_each_kinds_tolerance():
    assert golden_run.compare(_fp(0.5, 0.5), _fp(0.5, 0.5), exact=True) == []
    assert golden_run.compare(_fp(0.5, 0.5), _fp(0.5, 0.5, bits="b"), exact=True) != []
    # elsewhere a shift may move by 5% of its l1 (Adam's steps of lr), a weight by 0.5% but not by 1%
    assert golden_run.compare(_fp(0.5, 0.5), _fp(0.55, 0.505, bits="b"), exact=False) == []
    problems = golden_run.compare(_fp(0.5, 0.5), _fp(0.5, 0.51, bits="b"), exact=False)
    assert len(problems) == 1 and problems[0].startswith("G/main.0.weight")


def test_records_per_processor(tmp_path, monkeypatch):
    monkeypatch.setattr(golden_run, "GOLDEN", tmp_path / "golden.json")
    monkeypatch.setattr(golden_run, "BACKENDS", {"paddle": {}, "onednn": {}})
    here, found = "cpu X", {"paddle": _fp(0.5, 0.5), "onednn": _fp(0.5, 0.5)}
    monkeypatch.setattr(golden_run, "machine", lambda: here)
    monkeypatch.setattr(golden_run, "run", lambda backend, workdir: found[backend])
    golden_run.write(["paddle", "onednn"])  # X's record
    here, found = "cpu Y", {"paddle": _fp(0.52, 0.5, bits="y"), "onednn": _fp(0.5, 0.5)}
    golden_run.write(["paddle", "onednn"])  # Y's, beside X's
    assert golden_run.check("paddle", _fp(0.52, 0.5, bits="y")) == ("bit for bit: recorded on this processor", [])
    assert golden_run.check("paddle", _fp(0.52, 0.5, bits="z"))[1] != []
    here = "cpu Z"  # not recorded: the nearest record's tolerance
    how, problems = golden_run.check("paddle", _fp(0.52, 0.5, bits="z"))
    assert problems == [] and how.startswith("within the tolerance")
    assert golden_run.check("paddle", _fp(0.52, 0.6, bits="z"))[1] != []
    # paddle's bits move on X: Y's record of paddle is stale and goes, its onednn stays
    here, found = "cpu X", {"paddle": _fp(0.5, 0.501, bits="x2"), "onednn": _fp(0.5, 0.5)}
    golden_run.write(["paddle", "onednn"])
    records = {r["machine"]: sorted(r["backends"]) for r in json.loads(golden_run.GOLDEN.read_text())["records"]}
    assert records == {"cpu X": ["onednn", "paddle"], "cpu Y": ["onednn"]}
    here = "cpu Y"
    assert golden_run.check("paddle", _fp(0.5, 0.501, bits="y2"))[0].startswith("within the tolerance")
    assert golden_run.check("onednn", _fp(0.5, 0.5))[0].startswith("bit for bit")
    # a per-processor setting moved onednn's bits on X alone: --here-only keeps Y's
    found = {"onednn": _fp(0.5, 0.5, bits="x3")}
    here = "cpu X"
    golden_run.write(["onednn"], here_only=True)
    records = {r["machine"]: sorted(r["backends"]) for r in json.loads(golden_run.GOLDEN.read_text())["records"]}
    assert records == {"cpu X": ["onednn", "paddle"], "cpu Y": ["onednn"]}

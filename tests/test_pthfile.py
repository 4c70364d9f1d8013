"""pthfile.py: hand-assembled torch.save files (zip and legacy) read right; what a file cannot do even past the scan
(the records are frozen, each read gets fresh objects); names, shapes and sizes refused before any storage is read;
the digest is of the bytes read; the CLI listing. The hostile cases as subprocesses are in test_hostile.py."""

import io

from utils import UserError

import numpy as np
import pth_craft as c
import pytest

import fid
import pthfile

W = np.arange(6, dtype=np.float32)


def two_views() -> bytes:
    return c.state({"w": c.tensor(c.storage("0", 6), (2, 3), (3, 1)), "t": c.tensor(c.storage("0", 6), (3, 2), (1, 3))})


@pytest.mark.parametrize("layout", ["zip", "legacy", "deflate"])
def test_crafted_files_read_right(tmp_path, layout):
    path = tmp_path / "w.pth"
    if layout == "legacy":
        path.write_bytes(c.legacy(two_views(), ["0"], [W.tobytes()]))
    else:
        path.write_bytes(c.zipped(two_views(), {"0": W.tobytes()}, method=8 if layout == "deflate" else 0))
    sd, digest = pthfile.read(path, shapes={"w": (2, 3), "t": (3, 2)})
    np.testing.assert_array_equal(sd["w"], W.reshape(2, 3))
    np.testing.assert_array_equal(sd["t"], W.reshape(2, 3).T)
    assert digest == fid.sha256(path)  # the digest of the bytes read
    sd["w"][0, 0] = 99  # copies: the file's bytes and the other tensor are untouched
    assert sd["t"][0, 0] == 0


def test_build_on_an_allowed_global_is_refused_even_past_the_scan():
    stream = c.PROTO2 + c.glob("torch", "FloatStorage") + c.EMPTY_DICT + c.s("itemsize") + c.i(8) + c.SETITEM
    stream += c.BUILD + c.STOP
    with pytest.raises(pthfile._Refused, match="BUILD on a global"):
        pthfile.scan(stream)
    with pytest.raises(pthfile._Refused, match="tries to modify a StorageType"):  # the unpickler alone refuses too
        pthfile._Unpickler(io.BytesIO(stream), {}).load()
    fn = c.PROTO2 + c.glob("torch._utils", "_rebuild_tensor_v2") + c.EMPTY_DICT + c.s("fn") + c.NONE + c.SETITEM
    with pytest.raises(pthfile._Refused, match="tries to modify a Global"):
        pthfile._Unpickler(io.BytesIO(fn + c.BUILD + c.STOP), {}).load()
    a, b = pthfile._resolve("torch", "FloatStorage"), pthfile._resolve("torch", "FloatStorage")
    assert a is not b and a.itemsize == 4  # every read gets its own
    with pytest.raises(pthfile._Refused):
        a.itemsize = 8


def test_the_state_dict_build_torch_writes_is_accepted(tmp_path):
    # torch's state_dict() is an OrderedDict with a _metadata attribute: REDUCE, SETITEMS, then BUILD({_metadata})
    t = c.tensor(c.storage("0", 6), (6,), (1,))
    meta = c.EMPTY_DICT + c.s("_metadata") + c.glob("collections", "OrderedDict") + c.EMPTY_TUPLE + c.REDUCE
    meta += c.MARK + c.s("") + c.EMPTY_DICT + c.s("version") + c.i(1) + c.SETITEM + c.SETITEMS + c.SETITEM
    od = c.glob("collections", "OrderedDict") + c.EMPTY_TUPLE + c.REDUCE
    stream = c.PROTO2 + od + c.MARK + c.s("w") + t + c.SETITEMS + meta + c.BUILD + c.STOP
    (tmp_path / "w.pth").write_bytes(c.zipped(stream, {"0": W.tobytes()}))
    sd = pthfile.read_pth(tmp_path / "w.pth")
    assert list(sd) == ["w"] and type(sd) is dict
    np.testing.assert_array_equal(sd["w"], W)
    other = c.EMPTY_DICT + c.s("__class__") + c.NONE + c.SETITEM  # any attribute but _metadata: refused
    (tmp_path / "x.pth").write_bytes(c.zipped(c.PROTO2 + od + other + c.BUILD + c.STOP))
    with pytest.raises(UserError, match=r"x\.pth: sets attributes other than _metadata"):
        pthfile.read_pth(tmp_path / "x.pth")


def test_names_shapes_and_sizes_are_checked_before_any_storage_is_read(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(c.zipped(two_views(), {"0": W.tobytes()}))
    reads = []
    monkeypatch.setattr(pthfile, "_array", lambda *a: reads.append(a) or np.zeros(6, np.float32))
    with pytest.raises(UserError, match=r"w\.pth: unexpected key t; not the expected state dict"):
        pthfile.read(path, shapes={"w": (2, 3)})
    with pytest.raises(UserError, match=r"w\.pth: t has shape \(3, 2\), expected \(2, 3\)"):
        pthfile.read(path, shapes={"w": (2, 3), "t": (2, 3)})
    with pytest.raises(UserError, match="its tensors hold more than 0 MB"):
        pthfile.read(path, max_bytes=40)  # 2 x 24 bytes of tensors
    assert reads == []
    pthfile.read(path, max_bytes=48)
    assert len(reads) == 1  # one storage for both views


def test_a_safetensors_claim_of_being_pytorch_fids_weights_is_not_believed(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "claims.safetensors"
    save_file({"w": W}, str(path), metadata={"source_sha256": fid.WEIGHTS_SHA256_PREFIX + "0" * 56})
    sd, digest = fid.read_weights(path, {"w": (6,)})
    assert digest == fid.sha256(path) and not digest.startswith(fid.WEIGHTS_SHA256_PREFIX)
    with pytest.warns(UserWarning, match="has its own: use the .pth to check it"):
        fid._warn_unless_published(path, digest)
    with pytest.raises(UserError, match=r"claims\.safetensors: w has shape \(6,\)"):
        fid.read_weights(path, {"w": (2, 3)})  # checked before the tensor is read


def test_cli_lists_the_tensors(tmp_path, capsys):
    path = tmp_path / "w.pth"
    path.write_bytes(c.zipped(two_views(), {"0": W.tobytes()}))
    pthfile.main([str(path)])
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["w  float32  (2, 3)", "t  float32  (3, 2)"]
    assert out[2].startswith("2 tensors, 48 bytes, SHA-256 " + fid.sha256(path))
    with pytest.raises(UserError, match="usage"):
        pthfile.main([])

"""Property-based fuzzing (Hypothesis) of the two readers of untrusted containers: generated pickle opcode streams
through pthfile (the scan, then the unpickler) and generated safetensors headers and metadata through the model-file
reader. Every example must end in a result or a utils.UserError (never another exception, never a crash) and
allocate at most MAX_MB (tracemalloc's peak: numpy's buffers are traced too). Bounded examples, no deadline."""

from __future__ import annotations

import json
import struct
import tracemalloc

from utils import UserError

import numpy as np
import pth_craft as c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pthfile
from modelfile import read_state  # the model-file container reader

MAX_MB = 16
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def bounded(fn, *args):
    """fn(*args): its result or the UserError it raised; fails on any other exception or on more than MAX_MB."""
    tracemalloc.start()
    try:
        return fn(*args)
    except UserError as e:
        return e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MAX_MB << 20, f"{peak >> 20} MB"


# ---------------------------------------------------------------------------------------------
# pickle opcode streams: fragments of what torch.save writes, what attacks use, and raw opcodes with random arguments

_GLOBALS = [
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
    ("posix", "system"),
    ("builtins", "getattr"),
]
_RAW = [
    c.MARK, c.TUPLE, c.TUPLE1, c.TUPLE2, b"\x87", c.EMPTY_DICT, c.EMPTY_LIST, c.EMPTY_TUPLE, c.SETITEM, c.SETITEMS,
    c.APPEND, b"e", c.REDUCE, c.BINPERSID, c.BUILD, c.NONE, c.NEWFALSE, c.NEWTRUE, c.STOP, b"\x94", b"0", b"2",
    b"\x93", b"\x81", b"i", b"o", b"l", b"d", b"\x82\x01", b"p0\n", b"g0\n", b"F1.5\n", b"S'x'\n", b"V\xff\n",
]  # fmt: skip
_tensor = (
    st.integers(0, 3)
    .flatmap(  # ndim, then size, stride, offset, storage type of that many dimensions
        lambda n: st.tuples(
            st.lists(st.one_of(st.integers(0, 4), st.integers(-1, 1 << 20)), min_size=n, max_size=n),
            st.lists(st.one_of(st.integers(0, 4), st.integers(-1, 1 << 62)), min_size=n, max_size=n + (n == 3)),
            st.one_of(st.integers(0, 3), st.integers(-1, 1 << 41)),
            st.sampled_from(["FloatStorage", "HalfStorage", "BFloat16Storage", "BoolStorage", "LongStorage"]),
        )
    )
    .map(lambda a: c.tensor(c.storage("0", 4, a[3]), a[0], a[1], a[2]))
)
_fragment = st.one_of(
    st.sampled_from(_RAW),
    st.integers(-(1 << 80), 1 << 80).map(c.i),
    st.one_of(st.integers(0, 8), st.integers(0, (1 << 32) - 1)).map(c.put),
    st.integers(0, 8).map(c.get),
    st.integers(0, 8).map(lambda n: b"q" + bytes([n])),  # BINPUT
    st.integers(0, 8).map(lambda n: b"h" + bytes([n])),  # BINGET
    st.text(max_size=12).map(c.s),
    st.sampled_from(_GLOBALS).map(lambda g: c.glob(*g)),
    st.tuples(st.sampled_from(["0", "1", "../x"]), st.integers(-1, 1 << 41)).map(lambda a: c.storage(*a)),
    _tensor,
    st.binary(max_size=8),
)
_stream = st.lists(_fragment, max_size=40).map(lambda parts: c.PROTO2 + b"".join(parts))
_whole = st.one_of(  # complete state dicts with fuzzed tensors, and anything at all
    st.dictionaries(st.text(max_size=4), _tensor, max_size=4).map(c.state),
    st.dictionaries(st.text(max_size=4), _fragment, max_size=4).map(c.state),
    _stream.map(lambda b: b + c.STOP),
    _stream,
)


_storage_bytes = st.one_of(st.sampled_from([bytes(8), bytes(16), bytes(32)]), st.binary())


@FUZZ
@given(stream=_whole, legacy=st.booleans(), data=_storage_bytes)
def test_generated_pickles_end_in_a_result_or_one_user_error(tmp_path, stream, legacy, data):
    path = tmp_path / "fuzz.pth"
    path.write_bytes(c.legacy(stream, ["0"], [data]) if legacy else c.zipped(stream, {"0": data}))
    got = bounded(pthfile.read, path)
    if isinstance(got, UserError):
        assert str(path) in str(got) and "\n" not in str(got)
    else:
        sd, digest = got
        assert all(isinstance(v, np.ndarray) for v in sd.values()) and len(digest) == 64


@FUZZ
@given(stream=_whole)
def test_the_scan_refuses_with_its_own_error_or_passes(stream):
    try:
        end = pthfile.scan(stream)
    except (pthfile._Refused, ValueError):  # ValueError: pickletools on a malformed stream
        return
    assert 0 < end <= len(stream) and stream[end - 1 : end] == c.STOP


# ---------------------------------------------------------------------------------------------
# safetensors headers and metadata

_DTYPES = ["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "XX", ""]
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=20,
)
_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(_DTYPES),
        "shape": st.lists(st.integers(-1, 1 << 40), max_size=4),
        "data_offsets": st.lists(st.integers(-1, 1 << 40), min_size=0, max_size=3),
    }
)
_header = st.dictionaries(
    st.text(alphabet="abcG/_.0", max_size=8),
    _entry,
    max_size=4,
).flatmap(
    lambda tensors: st.fixed_dictionaries(
        {"__metadata__": st.dictionaries(st.text(max_size=8), _json_value.map(json.dumps) | st.text(max_size=12))}
    ).map(lambda meta: {**tensors, **meta})
)


def _safetensors(header: dict, data: bytes, pad: int) -> bytes:
    text = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + data


@FUZZ
@given(header=_header, data=st.binary(max_size=256), pad=st.integers(0, 8), cut=st.integers(0, 64))
def test_generated_safetensors_headers_end_in_a_state_or_one_user_error(tmp_path, header, data, pad, cut):
    blob = _safetensors(header, data, pad)
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob[: len(blob) - cut] if cut < 32 else blob)
    got = bounded(read_state, path)
    if isinstance(got, UserError):
        assert str(path) in str(got) and "\n" not in str(got)
    else:
        assert isinstance(got, dict)


@FUZZ
@given(offsets=st.lists(st.integers(0, 512), min_size=2, max_size=2), shape=st.lists(st.integers(0, 64), max_size=3))
def test_consistent_tensors_with_fuzzed_sizes_read_or_refuse(tmp_path, offsets, shape):
    header = {"t": {"dtype": "F32", "shape": shape, "data_offsets": sorted(offsets)}, "__metadata__": {"a": "1"}}
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(_safetensors(header, bytes(256), 0))
    got = bounded(read_state, path)
    if not isinstance(got, UserError):
        assert got["t"].shape == tuple(shape) and got["a"] == 1


def test_metadata_nested_deeper_than_the_recursion_limit_is_one_line(tmp_path):
    path = tmp_path / "deep.safetensors"
    path.write_bytes(_safetensors({"__metadata__": {"G": "[" * 100_000 + "]" * 100_000}}, b"", 0))
    with pytest.raises(UserError, match="deep.safetensors"):
        read_state(path)

"""Hand-assembled PyTorch .pth files for the hostile-input tests: pickle opcodes written byte by byte (as torch.save's
protocol 2 writes them), wrapped in torch.save's zip layout or its legacy stream. Nothing here imports torch."""

from __future__ import annotations

import io
import struct
import zipfile

PROTO2, STOP, MARK, TUPLE, TUPLE1, TUPLE2 = b"\x80\x02", b".", b"(", b"t", b"\x85", b"\x86"
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, SETITEM, SETITEMS = b"}", b"]", b")", b"s", b"u"
APPEND, REDUCE, BINPERSID, BUILD, NONE, NEWFALSE, NEWTRUE = b"a", b"R", b"Q", b"b", b"N", b"\x89", b"\x88"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def s(text: str) -> bytes:  # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i(n: int) -> bytes:  # BININT (32-bit) or LONG1 (any size)
    if -(1 << 31) <= n < 1 << 31:
        return b"J" + struct.pack("<i", n)
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


def glob(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + f"{module}\n{name}\n".encode()


def put(n: int) -> bytes:  # LONG_BINPUT
    return b"r" + struct.pack("<I", n)


def get(n: int) -> bytes:  # LONG_BINGET
    return b"j" + struct.pack("<I", n)


def tup(items) -> bytes:
    return MARK + b"".join(items) + TUPLE


def storage(key: str, numel: int, stype: str = "FloatStorage") -> bytes:
    """A persistent id as torch.save writes it: ('storage', torch.<stype>, key, 'cpu', numel)."""
    return tup([s("storage"), glob("torch", stype), s(key), s("cpu"), i(numel)]) + BINPERSID


def tensor(stor: bytes, size, stride, offset: int = 0, raw_size: bytes | None = None) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    size_b = raw_size if raw_size is not None else tup(i(x) for x in size)
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    args = tup([stor, i(offset), size_b, tup(i(x) for x in stride), NEWFALSE, hooks])
    return glob("torch._utils", "_rebuild_tensor_v2") + args + REDUCE


def state(entries: dict[str, bytes]) -> bytes:
    """A pickle of {name: tensor}: protocol 2, one SETITEMS."""
    return PROTO2 + EMPTY_DICT + MARK + b"".join(s(k) + v for k, v in entries.items()) + SETITEMS + STOP


def zipped(pkl: bytes, storages: dict[str, bytes] | None = None, method: int = zipfile.ZIP_STORED) -> bytes:
    """torch.save's zip layout: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", b"little")
        for key, data in (storages or {}).items():
            z.writestr(zipfile.ZipInfo(f"archive/data/{key}"), data, compress_type=method)
    return buf.getvalue()


def legacy(obj_pkl: bytes, keys: list[str], blobs: list[bytes]) -> bytes:
    """The legacy stream: magic, protocol version, sys info, the object, the storage keys, each storage as an
    int64 element count (float32 here) and its bytes."""
    head = [PROTO2 + i(LEGACY_MAGIC) + STOP, PROTO2 + i(1001) + STOP, PROTO2 + EMPTY_DICT + STOP, obj_pkl]
    keys_pkl = PROTO2 + EMPTY_LIST + MARK + b"".join(s(k) for k in keys) + b"e" + STOP
    tail = [struct.pack("<q", len(b) // 4) + b for b in blobs]
    return b"".join(head) + keys_pkl + b"".join(tail)


def patch_member(data: bytes, name: str, method: int | None = None, flags: int | None = None) -> bytes:
    """Rewrite a member's compression method or flag bits in both its local header and the central directory."""
    data = bytearray(data)
    raw = name.encode()
    for sig, meth_at, flag_at, name_at in ((b"PK\x03\x04", 8, 6, 30), (b"PK\x01\x02", 10, 8, 46)):
        pos = data.find(sig)
        while pos >= 0:
            n = struct.unpack_from("<H", data, pos + (26 if sig == b"PK\x03\x04" else 28))[0]
            if data[pos + name_at : pos + name_at + n] == raw:
                if method is not None:
                    struct.pack_into("<H", data, pos + meth_at, method)
                if flags is not None:
                    struct.pack_into("<H", data, pos + flag_at, flags)
            pos = data.find(sig, pos + 4)
    return bytes(data)


def flip_byte_of(data: bytes, content: bytes) -> bytes:
    """The zip with one byte of a stored member's `content` changed (its CRC no longer matches)."""
    at = data.index(content)
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]

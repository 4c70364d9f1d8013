"""Read a PyTorch state dict file (torch.save: the zip format or the legacy stream) without torch and without running
its pickle; list what it holds:

    python pthfile.py pt_inception-2015-12-05-6726825d.pth      # name, dtype, shape of each tensor

    sd, digest = read("w.pth", shapes={"fc.weight": (1008, 2048), ...})   # {name: numpy array}, SHA-256 of the bytes
    sd = read_pth("w.pth")                                                 # the same, without the check and digest

A .pth is a pickle, and unpickling runs whatever it says. Here nothing from the file is trusted, in this order:
1. the file's size is capped and its bytes are read once (and hashed: the digest is of what was read);
2. each pickle's opcode stream is scanned (pickletools.genops) before it is unpickled: an allow-list of opcodes and
   globals, memo indices bounded by the stream, dict keys only str, nesting depth and container sizes bounded, one
   BUILD at most and only on the state dict itself, no object changed after it was put into another;
3. the unpickler builds only frozen records (storages, tensor references) that cannot be modified, with the
   tensor-rebuild arguments type-checked (sizes and strides tuples of bounded non-negative ints);
4. names and shapes (when `shapes` is given), element counts x item size against a byte cap and against each storage's
   declared size, and each zip member's method (stored / deflate) and declared size, before any tensor is read;
5. storages are read in chunks up to their declared size (a member that inflates further is refused).
Every problem is one utils.UserError line naming the file.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import pickletools
import re
import sys
import zipfile
import zlib
from collections.abc import Mapping

import utils
from utils import UserError

import numpy as np

MAX_BYTES = 256 << 20  # tensor bytes of a file read without `shapes` (pytorch-fid's Inception holds 95 MB)
MAX_PICKLE_BYTES = 16 << 20  # one pickle stream (the Inception's data.pkl: 56 KB)
MAX_OPS = 1 << 20  # opcodes in one pickle stream
MAX_DEPTH = 32  # nesting of containers and MARKs (a state dict needs 5)
MAX_ITEMS = 1 << 16  # items in one container
MAX_DIMS = 8  # dimensions of one tensor
FILE_SLACK = 16 << 20  # a file may hold this much besides its tensors (pickle, zip directory, padding)
CHUNK = 1 << 20

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_KEY = re.compile(r"[0-9A-Za-z_.]{1,64}\Z")  # a storage key (torch writes "0", "1", ...): also a zip member name part


class _Refused(Exception):
    """Raised inside the unpickler; read() turns it into a UserError naming the file."""


# ---------------------------------------------------------------------------------------------
# frozen records: what the unpickler may build. None can be changed after creation (BUILD calls __setstate__,
# which refuses), and the globals a file may name are fresh stateless callables shared by nothing mutable.


class _Frozen:
    __slots__ = ()

    def __setattr__(self, name, value):
        raise _Refused(f"tries to set {name} on a {type(self).__name__.strip('_')}")

    def __setstate__(self, state):
        raise _Refused(f"tries to modify a {type(self).__name__.strip('_')} (BUILD)")

    def _init(self, **kw):
        for k, v in kw.items():
            object.__setattr__(self, k, v)


class _StorageType(_Frozen):
    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name: str):
        dtype = _DTYPES[name]
        self._init(name=name, dtype=dtype, itemsize=2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)


class _Storage(_Frozen):
    __slots__ = ("key", "stype", "numel")

    def __init__(self, key: str, stype: _StorageType, numel: int):
        self._init(key=key, stype=stype, numel=numel)


class _TensorRef(_Frozen):
    """A tensor not read yet (the legacy format stores the data after the pickle)."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self._init(storage=storage, offset=offset, size=size, stride=stride)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size


class _StateDict(dict):
    """What collections.OrderedDict builds here: a plain dict whose only BUILD is torch's `_metadata` (dropped)."""

    def __setstate__(self, state):
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise _Refused("sets attributes other than _metadata on its state dict")


class _Global(_Frozen):
    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn):
        self._init(name=name, fn=fn)

    def __call__(self, *args):
        return self.fn(*args)


def _int(v, what: str, hi: int) -> int:
    if type(v) is not int or not 0 <= v <= hi:
        shown = f"{v}" if type(v) is int and abs(v) < 1 << 80 else type(v).__name__
        raise _Refused(f"a tensor's {what} is {shown}, not an int in [0, {hi}]")
    return v


def _ints(v, what: str, hi: int) -> tuple[int, ...]:
    if type(v) is not tuple or len(v) > MAX_DIMS:
        raise _Refused(f"a tensor's {what} is a {type(v).__name__}, not a tuple of at most {MAX_DIMS} ints")
    return tuple(_int(x, what, hi) for x in v)


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):  # _rebuild_tensor_v2: requires_grad, hooks, meta
    if not isinstance(storage, _Storage):
        raise _Refused(f"a tensor's storage is a {type(storage).__name__}")
    if len(rest) > 3:
        raise _Refused("a tensor rebuild with too many arguments")
    size, stride = _ints(size, "size", 1 << 40), _ints(stride, "stride", 1 << 40)
    if len(size) != len(stride):
        raise _Refused(f"a tensor's size has {len(size)} dimensions, its stride {len(stride)}")
    return _TensorRef(storage, _int(storage_offset, "storage offset", 1 << 40), size, stride)


def _rebuild_parameter(data, *_):  # requires_grad, backward_hooks
    if not isinstance(data, _TensorRef):
        raise _Refused(f"a parameter holds a {type(data).__name__}, not a tensor")
    return data


def _ordered_dict(*args):
    if args:
        raise _Refused("builds an OrderedDict from arguments")
    return _StateDict()


_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): None for name in _DTYPES},
}


def _resolve(module: str, name: str):
    """A fresh object for an allowed global (nothing a file does to it reaches another read)."""
    if (module, name) not in _GLOBALS:
        raise _Refused(
            f"refused: its pickle calls {module}.{name}, which a tensor state dict never does "
            "(only tensors, storages and OrderedDict are read)"
        )
    fn = _GLOBALS[(module, name)]
    return _StorageType(name) if fn is None else _Global(f"{module}.{name}", fn)


# ---------------------------------------------------------------------------------------------
# 2. the opcode scan: a model of the unpickler's stack that bounds what unpickling can build


_OPS = frozenset(
    "PROTO FRAME STOP MARK NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 BINFLOAT "
    "BINUNICODE SHORT_BINUNICODE BINUNICODE8 EMPTY_DICT EMPTY_LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 "
    "APPEND APPENDS SETITEM SETITEMS BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET GLOBAL STACK_GLOBAL REDUCE "
    "BINPERSID BUILD".split()
)
_LEAF = {"NONE": "none", "NEWTRUE": "bool", "NEWFALSE": "bool", "BINFLOAT": "float", "LONG1": "int"}
_LEAF.update({k: "int" for k in ("BININT", "BININT1", "BININT2")})
_LEAF.update({k: "str" for k in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8")})
_LEAF.update({"EMPTY_DICT": "dict", "EMPTY_LIST": "list", "EMPTY_TUPLE": "tuple"})


class _Node:
    __slots__ = ("kind", "depth", "items", "used", "value")

    def __init__(self, kind: str, depth: int = 0, value=None):
        self.kind, self.depth, self.items, self.used, self.value = kind, depth, 0, False, value


class _Scan:
    """One pickle stream's stack, memo and marks, opcode by opcode; _Refused at the first thing a state dict never
    does. A node is frozen once it is inside another (`used`), so depths are exact and no cycle can form."""

    def __init__(self):
        self.stack: list[_Node] = []
        self.marks: list[int] = []
        self.memo: dict[int, _Node] = {}
        self.builds = 0

    def pop(self, n: int = 1) -> list[_Node]:
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < n:
            raise _Refused("malformed pickle (stack underflow)")
        out = self.stack[len(self.stack) - n :]
        del self.stack[len(self.stack) - n :]
        return out

    def pop_mark(self) -> list[_Node]:
        if not self.marks:
            raise _Refused("malformed pickle (no MARK)")
        at = self.marks.pop()
        out = self.stack[at:]
        del self.stack[at:]
        return out

    def push(self, node: _Node) -> None:
        if node.depth > MAX_DEPTH:
            raise _Refused(f"nests containers more than {MAX_DEPTH} deep")
        self.stack.append(node)

    def new(self, kind: str, items: list[_Node], value=None) -> _Node:
        if len(items) > MAX_ITEMS:
            raise _Refused(f"has a container of more than {MAX_ITEMS} items")
        for x in items:
            x.used = True
        return _Node(kind, 1 + max((x.depth for x in items), default=0), value)

    def add(self, op: str, kinds: tuple[str, ...], items: list[_Node]) -> None:
        """APPEND(S), SETITEM(S), BUILD: `items` go into the node under them, which must be fresh."""
        target = self.top()
        if target.kind not in kinds:
            raise _Refused(f"{op} on a {target.kind} (a state dict only fills its own fresh dicts and lists)")
        if target.used:
            raise _Refused("modifies an object after putting it into another")
        if op.startswith("SETITEM") and any(k.kind != "str" for k in items[::2]):
            raise _Refused("has a dict key that is not a string")
        target.items += len(items)
        if target.items > MAX_ITEMS:
            raise _Refused(f"has a container of more than {MAX_ITEMS} items")
        for x in items:
            x.used = True
        target.depth = max(target.depth, 1 + max((x.depth for x in items), default=0))
        if target.depth > MAX_DEPTH:
            raise _Refused(f"nests containers more than {MAX_DEPTH} deep")

    def top(self) -> _Node:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Refused("malformed pickle (stack underflow)")
        return self.stack[-1]

    def step(self, name: str, arg, n_ops: int) -> None:  # noqa: C901  (one branch per opcode, as pickle's own)
        if name in _LEAF:
            self.push(_Node(_LEAF[name], 1 if _LEAF[name] in ("dict", "list", "tuple") else 0, arg))
        elif name == "MARK":
            self.marks.append(len(self.stack))
            if len(self.marks) > MAX_DEPTH:
                raise _Refused(f"nests MARKs more than {MAX_DEPTH} deep")
        elif name == "TUPLE":
            self.push(self.new("tuple", self.pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            self.push(self.new("tuple", self.pop(int(name[-1]))))
        elif name in ("APPEND", "APPENDS"):
            self.add(name, ("list",), self.pop() if name == "APPEND" else self.pop_mark())
        elif name in ("SETITEM", "SETITEMS"):
            items = self.pop(2) if name == "SETITEM" else self.pop_mark()
            if len(items) % 2:
                raise _Refused("malformed pickle (SETITEMS with an odd count)")
            self.add(name, ("dict",), items)
        elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            idx = len(self.memo) if name == "MEMOIZE" else arg
            if idx >= n_ops:  # a pickler numbers its memo entries 0, 1, 2...: never beyond the opcodes so far
                raise _Refused(f"memo index {idx} beyond the stream's {n_ops} opcodes")
            self.memo[idx] = self.top()
        elif name in ("BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _Refused(f"gets memo entry {arg}, never put")
            self.push(self.memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, _, attr = arg.partition(" ")
            else:
                m, a = self.pop(2)
                if m.kind != "str" or a.kind != "str":
                    raise _Refused("STACK_GLOBAL of non-strings")
                module, attr = m.value, a.value
            _resolve(module, attr)  # refuses any other global here, before anything is built
            self.push(_Node("global", 0, (module, attr)))
        elif name == "REDUCE":
            fn, args = self.pop(2)
            if fn.kind != "global" or args.kind != "tuple":
                raise _Refused(f"calls a {fn.kind} with a {args.kind}")
            self.push(self.new("dict" if fn.value == ("collections", "OrderedDict") else "record", [fn, args]))
        elif name == "BINPERSID":
            (pid,) = self.pop()
            if pid.kind != "tuple":
                raise _Refused(f"a persistent id that is a {pid.kind}")
            self.push(self.new("storage", [pid]))
        elif name == "BUILD":
            self.builds += 1
            if self.builds > 1:
                raise _Refused("BUILDs more than one object (a state dict needs one, for its _metadata)")
            self.add(name, ("dict",), self.pop())  # only a fresh OrderedDict: never a storage type, function or tensor
        elif name == "STOP":
            if len(self.stack) != 1 or self.marks:
                raise _Refused(f"malformed pickle (STOP with a stack of {len(self.stack)})")
        # PROTO, FRAME: nothing to model


def scan(data, start: int = 0) -> int:
    """Check the pickle stream that starts at data[start] (see _Scan); returns where it ends (after STOP).
    Raises _Refused, or ValueError from pickletools on a malformed stream."""
    f = io.BytesIO(data)
    f.seek(start)
    state = _Scan()
    for n_ops, (op, arg, pos) in enumerate(pickletools.genops(f), 1):
        if n_ops > MAX_OPS or pos - start > MAX_PICKLE_BYTES:
            raise _Refused(f"a pickle longer than {MAX_OPS} opcodes or {MAX_PICKLE_BYTES >> 20} MB")
        if op.name not in _OPS:
            raise _Refused(f"opcode {op.name} at byte {pos}, which a tensor state dict never holds")
        state.step(op.name, arg, n_ops)
        if op.name == "STOP":
            return pos + 1
    raise ValueError("pickle exhausted before seeing STOP")


# ---------------------------------------------------------------------------------------------
# 3. unpickling what the scan passed


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str):
        return _resolve(module, name)

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise _Refused("refused: an unknown persistent id (not a torch storage)")
        stype, key, numel = pid[1], pid[2], pid[4]
        if type(key) is not str or not _KEY.match(key):
            raise _Refused("a storage key that is not a short name")
        numel = _int(numel, "storage size", 1 << 40)
        known = self.storages.setdefault(key, _Storage(key, stype, numel))
        if known.stype.name != stype.name or known.numel != numel:
            raise _Refused(f"storage {key} declared twice with different types or sizes")
        return known


def _unpickle(data, start: int, storages: dict):
    """(object, end offset) of the pickle at data[start:], scanned first."""
    end = scan(data, start)
    return _Unpickler(io.BytesIO(data[start:end]), storages).load(), end


# ---------------------------------------------------------------------------------------------
# 4. checks before reading any tensor


def _nbytes(storage: _Storage) -> int:
    return storage.numel * storage.stype.itemsize


def check(obj, shapes: Mapping[str, tuple] | None, cap: int) -> dict[str, _TensorRef]:
    """The state dict's tensors after checking names, shapes, element counts and spans against `cap` bytes."""
    if not isinstance(obj, dict):
        raise _Refused(f"holds a {type(obj).__name__}, not a state dict")
    total = 0
    for name, t in obj.items():
        if not isinstance(t, _TensorRef):
            raise _Refused(f"{name[:80]} is a {type(t).__name__}, not a tensor")
        if shapes is not None and name not in shapes:
            raise _Refused(f"unexpected key {name[:80]}; not the expected state dict")
        if shapes is not None and t.size != tuple(shapes[name]):
            raise _Refused(f"{name} has shape {t.size}, expected {tuple(shapes[name])}")
        numel = math.prod(t.size)
        total += numel * t.storage.stype.itemsize
        if total > cap:
            raise _Refused(f"its tensors hold more than {cap >> 20} MB (up to {name[:80]})")
        if numel and t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride, strict=True)) >= t.storage.numel:
            raise _Refused(f"{name[:80]} reaches past the end of its storage")
    storages = {id(t.storage): t.storage for t in obj.values()}.values()
    if sum(_nbytes(s) for s in storages) > cap + (cap >> 2):  # views may share storages larger than themselves
        raise _Refused(f"its storages hold more than {cap >> 20} MB")
    return obj


# ---------------------------------------------------------------------------------------------
# 5. the two layouts


def _array(buf, storage: _Storage, offset: int = 0) -> np.ndarray:
    if storage.stype.dtype == "bfloat16":  # numpy has no bfloat16: its bits are the top half of a float32
        return (np.frombuffer(buf, "<u2", storage.numel, offset).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(buf, np.dtype(storage.stype.dtype).newbyteorder("<"), storage.numel, offset)


def _member(z: zipfile.ZipFile, name: str, size: int) -> bytearray:
    """A zip member of exactly `size` bytes (its declared size and its content), read in chunks."""
    info = z.getinfo(name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Refused(f"{name} is compressed with method {info.compress_type} (torch.save stores)")
    if info.flag_bits & 1:
        raise _Refused(f"{name} is encrypted")
    if info.file_size != size:
        raise _Refused(f"{name} declares {info.file_size} bytes, its tensors need {size}")
    buf = bytearray(size)
    view, pos = memoryview(buf), 0
    with z.open(info) as f:
        while pos < size:
            chunk = f.read(min(CHUNK, size - pos))
            if not chunk:
                raise _Refused(f"{name} is truncated ({pos} of {size} bytes)")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        if f.read(1):  # also makes zipfile check the CRC at the end
            raise _Refused(f"{name} holds more than its {size} bytes")
    return buf


def _read_zip(data: bytes, shapes, cap: int) -> tuple[dict, dict]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
        pkl = sorted(n for n in names if n.endswith("/data.pkl") and n.count("/") == 1)
        if not pkl:
            raise _Refused("a zip without <name>/data.pkl: not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in names:
            order = z.getinfo(prefix + "byteorder").file_size
            if order > 16 or _member(z, prefix + "byteorder", order).strip() != b"little":
                raise _Refused("big-endian tensors are not supported (byteorder is not little)")
        info = z.getinfo(pkl[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise _Refused(f"{pkl[0]} declares {info.file_size} bytes, more than a state dict's pickle")
        storages: dict[str, _Storage] = {}
        obj, _ = _unpickle(bytes(_member(z, pkl[0], info.file_size)), 0, storages)
        tensors = check(obj, shapes, cap)
        arrays = {}
        for key, st in {t.storage.key: t.storage for t in tensors.values()}.items():  # only what tensors use
            if prefix + f"data/{key}" not in names:
                raise _Refused(f"storage data/{key} missing from the archive")
            arrays[key] = _array(_member(z, prefix + f"data/{key}", _nbytes(st)), st)
    return tensors, arrays


def _read_legacy(data: bytes, shapes, cap: int) -> tuple[dict, dict]:
    magic, pos = _unpickle(data, 0, {})
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise _Refused("not a PyTorch checkpoint (neither a torch.save zip nor its legacy format)")
    _, pos = _unpickle(data, pos, {})  # protocol version
    _, pos = _unpickle(data, pos, {})  # sys info
    storages: dict[str, _Storage] = {}
    obj, pos = _unpickle(data, pos, storages)
    tensors = check(obj, shapes, cap)
    keys, pos = _unpickle(data, pos, {})
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise _Refused("malformed storage list")
    used, arrays = {t.storage.key for t in tensors.values()}, {}
    if len(set(keys)) != len(keys) or not set(keys) <= set(storages) or not used <= set(keys):
        raise _Refused("its storage list does not match the storages of its state dict")
    for key in keys:  # each: an int64 element count, then the elements
        st = storages[key]
        count = int.from_bytes(data[pos : pos + 8], "little")
        if count != st.numel or pos + 8 + _nbytes(st) > len(data):
            raise _Refused(f"storage {key} holds {count} elements in {len(data) - pos - 8} bytes, declared {st.numel}")
        if key in used:  # a view on the file's bytes: nothing is allocated until the tensors are copied out
            arrays[key] = _array(data, st, pos + 8)
        pos += 8 + _nbytes(st)
    return tensors, arrays


def _materialize(t: _TensorRef, base: np.ndarray) -> np.ndarray:
    if 0 in t.size:
        return np.zeros(t.size, base.dtype)
    if not t.size:  # 0-d (as_strided would keep the storage's shape)
        return np.array(base[t.offset])
    view = np.lib.stride_tricks.as_strided(base[t.offset :], t.size, [st * base.itemsize for st in t.stride])
    return np.array(view)  # a copy: the storage belongs to the file's bytes


# ---------------------------------------------------------------------------------------------


def read(
    path: str | os.PathLike, shapes: Mapping[str, tuple] | None = None, max_bytes: int = MAX_BYTES
) -> tuple[dict[str, np.ndarray], str]:
    """({name: numpy array}, SHA-256 of the file's bytes) of a torch.save state dict (zip or legacy), unpickling
    nothing but tensors, storages and OrderedDict. shapes: the names and shapes allowed (anything else is refused
    before a tensor is read); the byte cap is then what they need at 8 bytes an element, else `max_bytes`.
    Raises UserError, one line naming the file, on anything else."""
    where = str(path)
    cap = min(max_bytes, 8 * sum(math.prod(s) for s in shapes.values())) if shapes is not None else max_bytes
    try:
        if os.path.isdir(where):
            raise _Refused("is a folder, not a weight file")
        size = os.path.getsize(where)
        if size > cap + FILE_SLACK:
            raise _Refused(f"{size >> 20} MB, more than the {(cap + FILE_SLACK) >> 20} MB a state dict needs here")
        with open(where, "rb") as f:
            data = f.read(size + 1)
        digest = hashlib.sha256(data).hexdigest()
        if data[:4] == b"PK\x03\x04":
            tensors, arrays = _read_zip(data, shapes, cap)
        else:
            tensors, arrays = _read_legacy(data, shapes, cap)
        return {name: _materialize(t, arrays[t.storage.key]) for name, t in tensors.items()}, digest
    except FileNotFoundError:
        raise UserError(f"{where}: no such file") from None
    except _Refused as e:
        raise UserError(f"{where}: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as e:  # bad CRC, bad header, broken deflate
        raise UserError(f"{where}: a damaged zip ({_why(e)})") from None
    except (NotImplementedError, RuntimeError) as e:  # zipfile: an unknown method, an encrypted member
        raise UserError(f"{where}: an unreadable zip member ({_why(e)})") from None
    except OSError as e:
        raise UserError(f"{where}: cannot read it ({_why(e)})") from None
    except (pickle.UnpicklingError, ValueError, EOFError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise UserError(f"{where}: not a PyTorch state dict ({type(e).__name__}: {_why(e)})") from None


def _why(e: Exception) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def read_pth(path: str | os.PathLike, shapes: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """read() without the digest."""
    return read(path, shapes)[0]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UserError("usage: python pthfile.py FILE.pth")
    sd, digest = read(argv[0])
    for name, a in sd.items():
        print(f"{name}  {a.dtype}  {tuple(a.shape)}")
    print(f"{len(sd)} tensors, {sum(a.nbytes for a in sd.values())} bytes, SHA-256 {digest}")


if __name__ == "__main__":
    sys.exit(utils.run_cli(main))

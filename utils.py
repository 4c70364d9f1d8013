"""Small helpers shared by the scripts: the one error type that scripts turn into a one-line message, atomic
writes, and the command line built from a config dataclass.

`import paddle` warns "No ccache found" on stderr (its C++ extension module looks for ccache at import), which would
be a stray line before every script's output: the filter below hides it. It only works when this module is imported
before paddle, so ruff's import sorting puts `utils` in a section of its own before the third-party packages
(pyproject.toml); nothing else depends on import order (the CPU thread settings are device.py's).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

warnings.filterwarnings("ignore", message="No ccache found")


class UserError(Exception):
    """A problem with the user's input (a file, a flag): printed as one line, no traceback."""


# ---------------------------------------------------------------------------------------------
# atomic writes: a reader (or a crash) never sees a half-written file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, else removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _DISK_ERRORS:
            raise _write_error(path, e) from None
        raise


# a full disk, a read-only or full-quota file system, no permission: the user's to fix, one line
_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                errno.ENAMETOOLONG}  # fmt: skip


def _write_error(path: Path, e: OSError) -> Exception:
    if e.errno not in _DISK_ERRORS:
        return e
    kept = "; the previous file is unchanged" if path.exists() else ""
    return UserError(f"{path}: cannot write it ({e.strerror or os.strerror(e.errno)}){kept}")


# atomic_path's temporary names: "." + the file's name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files atomic_path left in `folder` (not below) when a process was killed mid-write;
    only names of atomic_path's own pattern, only regular files. Returns the names removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return sorted(removed)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_out_path(path: str | os.PathLike, flag: str, folder: bool) -> None:
    """UserError, before any work, when an output path cannot be what it must be: a file where a folder is
    expected (folder=True) or a folder where a file is, or a file where one of its parent folders would go."""
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise UserError(f"{p}: {flag} must be a folder, and this is a file")
    if not folder and p.is_dir():
        raise UserError(f"{p}: {flag} must be a file, and this is a folder")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{parent}: a file, where {flag} {p} needs a folder")
            break


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# command-line plumbing


def flag(default, help: str, **metadata):
    """A config field that parse_config turns into a flag: its default, its help text, and choices=, const=,
    metavar= or type= as parse_config reads them."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def parse_config(cls, argv=None, description: str | None = None, epilog: str | None = None):
    """Build an argparse parser from a config dataclass and return a filled instance.

    Each field becomes `--field-name`; its type comes from the default, its help text from
    `field(metadata={"help": ...})`; bools become `--flag/--no-flag`; `metadata={"choices": [...]}`
    restricts values; `metadata={"const": v}` lets the flag stand alone for v. The CLI holds no logic of its
    own: it only fills the dataclass.
    """
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        kw: dict = {
            "default": default,
            "help": f"{help_} (default: %(default)s)" if help_ else "(default: %(default)s)",
        }
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        ftype = f.metadata.get("type")
        if ftype is None:
            ftype = type(default) if default is not None else str
            if isinstance(default, (list, tuple)):
                ftype, kw["nargs"] = (type(default[0]) if default else int), len(default) or "+"
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        if "const" in f.metadata:  # the flag alone means this value (`--amp` = `--amp fp16`)
            kw["nargs"], kw["const"] = "?", f.metadata["const"]
        parser.add_argument(flag, type=ftype, **kw)
    args = parser.parse_args(argv)
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()}
    return cls(**values)


def run_cli(main, argv=None) -> int:
    """Run `main(argv)`, turning a UserError into `prog: error: message` and exit status 2."""
    try:
        main(argv)
    except UserError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        return 130
    return 0

"""Writing files so that a crash never leaves half of one, and reading JSON with errors that name the file.

Every file autodistill writes goes through `atomic_path` (or its two shorthands): the content is
written to a hidden temporary file beside the target, flushed to disk, and renamed over the target
only when complete. A reader sees the old file or the new one, never a mix.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autodistill.errors import AutodistillError, ConfigError

__all__ = ["atomic_path", "atomic_write_json", "atomic_write_text", "check_output_file", "file_on_the_way",
           "json_default", "read_json", "read_toml"]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``, on error it
    is removed and ``path`` is left as it was. The parent folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:  # on disk before the rename, so a power cut cannot leave an empty file
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); the result gets the mode of an ordinary new file, or
        # keeps the mode of the file it replaces
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_on_the_way(path: str | os.PathLike[str]) -> Path | None:
    """The nearest existing parent of ``path`` when it is not a folder (so ``path`` cannot be made), else None."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_file(path: str | os.PathLike[str], flag: str, *, ours: Callable[[Path], bool] | None = None,
                      what: str = "a file autodistill wrote", force: bool | None = None,
                      error: type[AutodistillError] = ConfigError) -> Path:
    """Check, before any work, that ``path`` can be written as a file: it is not a folder, nothing on its
    way is a file, and an existing file is one of ours (``ours(path)``: an earlier output, described as
    ``what`` in the message) or ``force`` is True. ``force=None``: the command has no ``--force``."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{flag} {str(p)!r} is a folder; give a file name")
    blocked = file_on_the_way(p)
    if blocked is not None:
        raise error(f"{flag} {str(p)!r}: {str(blocked)!r} is a file, not a folder")
    if p.exists() and ours is not None and not force and not ours(p):
        hint = "give another name" if force is None else "pass --force to replace it, or give another name"
        raise error(f"{flag} {str(p)!r} exists and is not {what}; {hint}")
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_default(o: Any) -> Any:
    """JSON for the values autodistill writes: objects with ``to_dict`` (architectures), NumPy scalars,
    and non-finite floats (as null)."""
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (see `json_default` for what it converts)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def read_toml(path: str | os.PathLike[str], *, what: str, error: type[AutodistillError] = ConfigError
              ) -> dict[str, Any]:
    """The TOML table in ``path``; a file that is not UTF-8, not TOML or not readable raises ``error``
    naming it as ``what`` (``"profile file"``), instead of a traceback."""
    import tomllib

    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{what} {str(p)!r} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})"
                    ) from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{p}: not valid TOML: {e}") from None
    except OSError as e:
        raise error(f"cannot read {what} {str(p)!r}: {e.strerror}") from None


def read_json(path: str | os.PathLike[str], *, what: str = "file",
              error: type[AutodistillError] = ConfigError) -> Any:
    """The JSON in ``path``, or None when there is no such file.

    A file that is not UTF-8, not JSON (a truncated write of another program, say), holding a number
    of thousands of digits or not readable raises ``error`` naming it as ``what``, instead of a traceback."""
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise error(f"{what} {str(p)!r} is not a file")
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise error(f"{what} {str(p)!r} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise error(f"{what} {str(p)!r} is not valid JSON (truncated or damaged?): {e}") from None
    except ValueError as e:  # a number of thousands of digits (Python's int limit), say
        raise error(f"{what} {str(p)!r} holds a value autodistill cannot read: "
                    f"{str(e).split(';')[0][:200]}") from None
    except OSError as e:
        raise error(f"cannot read {what} {str(p)!r}: {e.strerror}") from None

"""REFs to users' code: `path/to/file.py:attr` or `package.module:attr`, as Flower's and
uvicorn's command lines name an app. Every failure is one ConfigError line."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from node.apps.native import USER_ERRORS, error_line
from node.errors import ConfigError

MAX_REF = 256


def split_ref(ref: str) -> tuple[str, str]:
    """(module or file, attribute path) of `ref`; ConfigError if it is not a REF."""
    if not isinstance(ref, str) or not 0 < len(ref) <= MAX_REF or ref.count(":") != 1:
        raise ConfigError(f"{str(ref)[:80]!r} is not an app REF: write path/to/file.py:attr or package.module:attr")
    where, attr = ref.split(":")
    if not where or not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise ConfigError(f"{ref!r} is not an app REF: write path/to/file.py:attr or package.module:attr")
    return where, attr


def load_ref(ref: str, base_dir: Path | None = None) -> Any:
    """The object `ref` names. A file path is relative to `base_dir` (default: the working
    directory); its folder is put on sys.path first, so the file may import its neighbours,
    as a Flower app's modules do."""
    where, attr = split_ref(ref)
    try:
        if where.endswith(".py") or "/" in where or "\\" in where:
            module = _load_file(Path(where) if base_dir is None else base_dir / where, ref)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except SyntaxError as exc:
        raise ConfigError(f"app {ref}: {exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except USER_ERRORS as exc:  # whatever the user's module raises while it is imported, sys.exit too
        raise ConfigError(f"app {ref} does not import: {error_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"app {ref}: {where} has no attribute {attr!r}") from None
    return obj


def _load_file(path: Path, ref: str) -> Any:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"app {ref}: no file {path}")
    # One module per file, named after its path, so two apps with the same file name can coexist.
    name = f"fedledger_app_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"app {ref}: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module

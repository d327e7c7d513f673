"""Loading the user's application: `module:attribute` or `path/to/file.py:attribute`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from pollen.client import Client


class AppLoadError(Exception):
    """The application reference cannot be loaded into a `pollen.Client`."""


def load_app(reference: str) -> Client:
    """The `pollen.Client` named by `reference`.

    `reference` is `module:attribute` (an importable module, the current directory
    included) or `path/to/file.py:attribute`; the attribute may be dotted. It names a
    Client instance, a Client subclass, or a callable taking no argument that returns a
    Client.
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(f"expected MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE, got {reference!r}")
    module = _import(module_name)
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(f"{module_name} has no attribute {attribute!r}") from None
    if isinstance(target, Client):
        return target
    if not callable(target):
        raise AppLoadError(f"{reference} is a {type(target).__name__}, not a pollen.Client")
    app = target()
    if not isinstance(app, Client):
        raise AppLoadError(f"{reference}() returned a {type(app).__name__}, not a pollen.Client")
    return app


def _import(name: str) -> object:
    if name.endswith(".py"):
        path = Path(name).resolve()
        if not path.is_file():
            raise AppLoadError(f"no such file: {name}")
        # The file's folder is importable, so that the app can import its neighbours.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(f"pollen_app_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise AppLoadError(f"cannot load {name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise AppLoadError(f"no module named {name!r}") from None
        raise

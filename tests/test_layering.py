"""The layering of DESIGN.md, enforced on the import graph of every source file."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each top-level package may import besides the standard library and itself.
ALLOWED = {
    "pollen": {"numpy", "google", "zstandard", "ml_dtypes"},
    # The harness is a gRPC server (client mode) and makes its TLS certificates itself.
    "conformance": {"pollen", "numpy", "google", "yaml", "jsonschema", "zstandard", "ml_dtypes"}
    | {"grpc", "cryptography"},
}
# Packages that must never appear in a package's imports, whatever else is allowed.
FORBIDDEN = {
    "pollen": {"grpc", "ray", "reference_server", "reference_client", "conformance"},
    "reference_client": {"reference_server"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py")) if "_generated" not in p.parts]


# Packages named in the rules that exist in this checkout (later issues add the others).
PRESENT = sorted(p for p in set(ALLOWED) | set(FORBIDDEN) if (ROOT / p).is_dir())


@pytest.mark.parametrize("package", PRESENT)
def test_package_imports_respect_the_layering(package: str) -> None:
    allowed = ALLOWED.get(package)
    forbidden = FORBIDDEN.get(package, set())
    for path in _sources(package):
        imported = _imports(path) - {package} - set(sys.stdlib_module_names) - {"__future__"}
        assert not imported & forbidden, f"{path.relative_to(ROOT)} imports {imported & forbidden}"
        if allowed is not None:
            extra = imported - allowed
            assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"


def test_the_check_sees_imports() -> None:
    assert {"pollen", "conformance"} <= set(PRESENT)
    assert "numpy" in _imports(ROOT / "pollen" / "blob.py")
    assert len(_sources("pollen")) >= 5

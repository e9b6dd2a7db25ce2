"""The package's layering, checked on the source: imports point down, never up.

cli -> console, pipeline -> engines -> partition -> io / core / enrichment / report -> config / presets /
schema / errors. Only the CLI and its console import typer and rich; only the geo package imports geoip2 and
maxminddb; Dask is imported only by the Dask engine; engines do not import each other (only their shared
base and budget), so each stays a plug-in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sessionize"

#: Each module's layer, by its dotted name's first component below ``sessionize`` (higher may import lower).
LAYERS: dict[str, int] = {
    "_version": 0,
    "errors": 0,
    "display": 0,
    "schema": 1,
    # A preset is a set of options (data over schema's names): the config applies it.
    "presets": 2,
    "config": 2,
    "distinct": 3,
    "referrer": 3,
    "privacy": 4,
    "normalize": 4,
    "accesslog": 4,
    "core": 4,
    "attribution": 4,
    "useragent": 4,
    "geo": 4,
    "io": 5,
    "report": 5,
    "partition": 6,
    "engines": 7,
    "pipeline": 8,
    "console": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 10,
}
#: Third-party packages only some modules may import.
RESTRICTED = {
    "typer": {"cli", "console"},
    "rich": {"cli", "console"},
    "click": {"cli", "console"},
    "geoip2": {"geo"},
    "maxminddb": {"geo"},
    "dask": {"engines.dask"},
    "distributed": {"engines.dask"},
    "fsspec": {"engines.dask", "io.inputs"},
    "pyspark": {"engines.spark"},
}
#: What an engine module may import from its own package.
ENGINE_SHARED = {"engines.base", "engines.budget"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported name, line) of every import in ``path``, relative to ``sessionize`` when internal."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = (
                    module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")
                )
                base = ".".join(["sessionize", *package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base != "sessionize":
                names.append((base, node.lineno))
            if base == "sessionize" or base.startswith("sessionize."):
                # ``from sessionize import io`` imports the module io (a name such as
                # ``__version__`` has no layer and is skipped).
                names.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return names


def _layer(name: str) -> int | None:
    return LAYERS.get(name.split(".")[0])


def _internal(name: str) -> str | None:
    if name == "sessionize":
        return "__init__"
    if name.startswith("sessionize."):
        return name.removeprefix("sessionize.")
    return None


MODULES = _modules()


def test_every_module_has_a_layer() -> None:
    missing = [module for module, _ in MODULES if _layer(module) is None]
    assert not missing, f"give these modules a layer in LAYERS: {missing}"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down(module: str, path: Path) -> None:
    own = _layer(module)
    assert own is not None
    wrong = []
    for name, line in _imports(path, module):
        target = _internal(name)
        if target is None:
            top = name.split(".")[0]
            allowed = RESTRICTED.get(top)
            if allowed is not None and not any(module == a or module.startswith(a + ".") for a in allowed):
                wrong.append(f"line {line}: {name} (only {sorted(allowed)} may import it)")
            continue
        layer = _layer(target)
        if layer is None:
            # ``from sessionize.geo import GeoDatabase``: a name, checked as its module above.
            continue
        if target.split(".")[0] == module.split(".")[0]:
            shared = {*ENGINE_SHARED, module}
            if (
                module.startswith("engines.")
                and target.startswith("engines.")
                and not any(target == m or target.startswith(m + ".") for m in shared)
            ):
                wrong.append(f"line {line}: {name} (an engine imports only {sorted(ENGINE_SHARED)})")
            continue
        if layer > own:
            wrong.append(f"line {line}: {name} (layer {layer} above {module}'s {own})")
    assert not wrong, f"sessionize.{module} imports upwards:\n" + "\n".join(wrong)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The walker sees ``from sessionize import pipeline`` in a low module (the test can fail)."""
    source = tmp_path / "partition.py"
    source.write_text("from sessionize import pipeline\nimport typer\n", encoding="utf-8")
    names = [name for name, _ in _imports(source, "partition")]
    assert "sessionize.pipeline" in names and "typer" in names
    assert _layer(_internal("sessionize.pipeline") or "") == LAYERS["pipeline"] > LAYERS["partition"]

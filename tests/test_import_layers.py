"""The package reads top-down: every import of a ``sodec_pipeline`` module, at module level or inside a
function, goes to the same layer or a lower one (CLI → demo → evaluation, benchmarking, conversion → pipelines →
models, schedulers, metrics → bitstream and the other single modules)."""

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parent.parent / "sodec_pipeline"

#: Top-level subpackages and modules of sodec_pipeline, highest layer first.
LAYERS = (
    ("__main__", "cli"),
    ("demo",),
    ("evaluation", "benchmarking", "conversion"),
    ("pipelines",),
    ("models", "schedulers", "metrics"),
    (
        "bitstream", "entropy_coding", "image_processing", "hub_configs", "hub_download_options",
        "shipped_models", "package_data", "lazy_exports", "quality_levels", "orientation", "hardware",
        "model_folder_checks", "image_files", "messages",
    ),
)  # fmt: skip
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def _imports(path: Path):
    """(top-level part of sodec_pipeline imported, line) of every import in ``path``, lazy ones included."""
    package = path.relative_to(PACKAGE).parts[:-1]  # where a relative import starts (a package's own folder)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = list(package[: len(package) - node.level + 1]) + (
                    node.module.split(".") if node.module else []
                )
            elif node.module and node.module.split(".")[0] == "sodec_pipeline":
                target = node.module.split(".")[1:]
            else:
                continue
            # `from . import x` / `from sodec_pipeline import x`: the imported names are the modules
            targets = [target] if target else [[alias.name] for alias in node.names]
            for t in targets:
                yield t[0], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "sodec_pipeline" and len(names) > 1:
                    yield names[1], node.lineno


def test_every_module_is_in_a_layer():
    top_level = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert top_level - {"__init__"} == set(LAYER_OF)


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package namespace (lazy exports of every layer)
        own = LAYER_OF[parts[0]]
        for imported, line in _imports(path):
            if imported == "__version__":
                continue  # the package's version, defined in sodec_pipeline/__init__.py
            if LAYER_OF[imported] < own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert upward == []

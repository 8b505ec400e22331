"""The package reads top-down: every import of a ``sodec_pipeline`` module, at module level or inside a
function, goes to the same layer or a lower one (CLI → demo → evaluation, benchmarking, conversion → pipelines →
models, schedulers, metrics → codec → the single modules). And ``models/`` codes only through the entropy
models: it imports neither the container (``codec/bitstream.py``) nor the symbol coder or constriction."""

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
    ("codec",),
    (
        "image_processing", "hub_configs", "hub_download_options", "shipped_models", "package_data",
        "lazy_exports", "orientation", "hardware", "model_folder_checks", "library_internals", "image_files",
        "messages",
    ),
)  # fmt: skip
#: What ``models/`` may not import: the container and the coding of symbols are ``codec/entropy_models.py``'s.
NOT_FROM_MODELS = ("codec.bitstream", "codec.entropy_coding", "constriction")
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def _imports(path: Path):
    """(top-level part of sodec_pipeline imported, line) of every import in ``path``, lazy ones included."""
    for target, line in _import_targets(path):
        yield target[0], line


def _import_targets(path: Path, source: str = None):
    """(path inside sodec_pipeline as a list, line) of every import of ``path`` (or of ``source`` as if it were
    ``path``), lazy ones included, with the imported name last: ``from ..codec import errors`` in a model is
    ``["codec", "errors"]``. An import of another package is ``["<external>", name, ...]``."""
    package = path.relative_to(PACKAGE).parts[:-1]  # where a relative import starts (a package's own folder)
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = list(package[: len(package) - node.level + 1]) + (
                    node.module.split(".") if node.module else []
                )
            elif node.module and node.module.split(".")[0] == "sodec_pipeline":
                target = node.module.split(".")[1:]
            else:
                yield ["<external>", *(node.module or "").split(".")], node.lineno
                continue
            for alias in node.names:  # `from . import x`: x is the module; `from .a import x`: a, or a.x
                yield target + [alias.name], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "sodec_pipeline" and len(names) > 1:
                    yield names[1:], node.lineno
                elif names[0] != "sodec_pipeline":
                    yield ["<external>", *names], node.lineno


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
            if imported in ("__version__", "<external>"):
                continue  # the package's version, defined in sodec_pipeline/__init__.py
            if LAYER_OF[imported] < own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert upward == []


def test_models_import_neither_the_container_nor_the_symbol_coder():
    offenders = []
    for path in sorted((PACKAGE / "models").rglob("*.py")):
        for target, line in _import_targets(path):
            dotted = ".".join(target[1:] if target[0] == "<external>" else target)
            if any(dotted == banned or dotted.startswith(banned + ".") for banned in NOT_FROM_MODELS):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} imports {dotted}")
    assert offenders == []


def _module_file(target):
    """The file of the longest module prefix of an import target (``["codec", "errors", "BitstreamError"]`` →
    codec/errors.py), or ``None``."""
    for n in range(len(target), 0, -1):
        path = PACKAGE.joinpath(*target[:n])
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def test_models_do_not_reach_the_container_through_what_they_import():
    """Nor indirectly: the modules that models/ imports, and theirs, never import codec/bitstream.py."""
    container = PACKAGE / "codec" / "bitstream.py"
    seen, todo = set(), sorted((PACKAGE / "models").rglob("*.py"))
    while todo:
        path = todo.pop()
        if path in seen or path == PACKAGE / "__init__.py":  # the package namespace: lazy exports only
            continue
        seen.add(path)
        todo.extend(f for t, _ in _import_targets(path) if t[0] != "<external>" and (f := _module_file(t)))
    assert PACKAGE / "codec" / "entropy_models.py" in seen and container not in seen


def test_the_models_check_sees_each_way_of_importing_the_container():
    source = "from ..codec.bitstream import decode_bitstream\nimport constriction\nfrom ..codec import bitstream\n"
    targets = [t for t, _ in _import_targets(PACKAGE / "models" / "probe.py", source)]  # a path, never a file
    assert sorted(targets) == [
        ["<external>", "constriction"],
        ["codec", "bitstream"],
        ["codec", "bitstream", "decode_bitstream"],
    ]

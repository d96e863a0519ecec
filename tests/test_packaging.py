"""The installed shape: one import root, package data inside it, runnable from anywhere."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import zipfile
from importlib.metadata import Distribution
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the project built as `pip install .` would build it."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (out / "build.log").write_text(build.stdout + build.stderr)
    (built,) = out.glob("signalengine-*.whl")
    return built


def test_the_build_warns_about_no_package_data(wheel: Path) -> None:
    # setuptools warns ("Package 'api.static' is absent from the `packages`
    # configuration") for every data folder it would treat as an undeclared package
    log = (wheel.parent / "build.log").read_text()
    assert "is absent from the" not in log and "Package would be ignored" not in log
    assert "Warning" not in log.replace("warning: install_lib", "").replace("warning: build_py", "")


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked into a site directory of its own (what pip would put there)."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_only_top_level_import_name_is_signalengine(installed: Path) -> None:
    (info,) = installed.glob("signalengine-*.dist-info")
    files = Distribution.at(info).files or []
    top = {f.parts[0] for f in files if not f.parts[0].endswith(".dist-info")}
    assert top == {"signalengine"}


def test_runtime_files_are_package_data(installed: Path) -> None:
    """Everything the CLI reads at run time travels inside the package."""
    package = installed / "signalengine"
    migrations = sorted(p.name for p in (ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))
    assert sorted(p.name for p in (package / "sql").glob("[0-9]*.sql")) == migrations
    timescale = sorted(p.name for p in (ROOT / "sql" / "timescale").glob("[0-9]*.sql"))
    assert sorted(p.name for p in (package / "sql" / "timescale").glob("*.sql")) == timescale
    static = sorted(p.name for p in (ROOT / "api" / "static").iterdir())
    assert sorted(p.name for p in (package / "api" / "static").iterdir()) == static
    assert (package / "automations.yaml").read_text() == (
        ROOT / "signalengine" / "automations.yaml"
    ).read_text()


def test_python_m_signalengine_runs_from_a_directory_with_its_own_core(
    installed: Path, tmp_path: Path
) -> None:
    """A `core/` (or `tasks/`) folder in the working directory is never what runs."""
    for name in ("core", "tasks", "api"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise SystemExit('wrong package')\n")
    env = {"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        [sys.executable, "-m", "signalengine", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "up" in shown.stdout and "backtest" in shown.stdout
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import signalengine.core.sqlfiles as s; print(s.__file__);"
            "print(len(s.migration_files(s.SQL_DIR)))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, count = where.stdout.split()
    assert Path(module_file).is_relative_to(installed)
    assert int(count) == len(list((ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql")))


def test_the_pure_engine_loads_neither_psycopg_nor_the_settings() -> None:
    probe = (
        "import sys, signalengine.tasks.engine;"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('psycopg', 'prefect') or m == 'signalengine.core.config'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def _allowed_by_dockerignore(path: str) -> bool:
    """Whether `.dockerignore` (an allow-list: `*`, then `!entries`) keeps `path`."""
    keep = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        hit = fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
        if hit or fnmatch.fnmatch(Path(path).name, pattern):
            keep = negated
    return keep


def _runtime_files_of_the_image() -> set[str]:
    """Files that compose commands and the image's processes read from SIGNALENGINE_HOME."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    text = yaml.safe_dump(compose)
    named = set(
        re.findall(r"\b(?:deployments|sql|signalengine)/[\w./-]+\.(?:json|ya?ml|sql)", text)
    )
    prefect = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"].split(":")[0] for d in prefect["deployments"]}
    package_data = {
        str(p.relative_to(ROOT))
        for p in [
            *(ROOT / "sql").rglob("*.sql"),
            *(ROOT / "api" / "static").iterdir(),
            ROOT / "signalengine" / "automations.yaml",
        ]
    }
    mounted = {m for m in named if m.startswith("deployments/") and "work-pool" not in m}
    return (named - mounted) | entrypoints | package_data | {"prefect.yaml", "pyproject.toml"}


def test_every_file_read_at_run_time_is_in_the_image_build_context() -> None:
    files = _runtime_files_of_the_image()
    assert "deployments/work-pool.json" in files and "flows/stream.py" in files
    for path in sorted(files):
        assert (ROOT / path).exists(), path
        assert _allowed_by_dockerignore(path), f"{path} is left out of the image"

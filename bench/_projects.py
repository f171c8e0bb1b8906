"""Pinned PyPI source distributions as benchmark workspaces, downloaded once and cached.

    from _projects import project_source
    root = project_source("werkzeug", "3.1.3")   # .../werkzeug-3.1.3 (the unpacked sdist)

The cache lives in $SWARM_LSP_BENCH_DIR, else /tmp/swarm-lsp-bench. Each sdist is fetched with
`python -m pip download --no-deps --no-binary :all: NAME==VERSION` (pip talks to PyPI; nothing
is installed) and unpacked with tarfile's "data" filter. A folder that is already unpacked is
reused as is: benchmarks copy it before they change anything.

    from _projects import npm_source
    root = npm_source("ssh2", "1.16.0")            # .../npm-ssh2-1.16.0 (the unpacked npm tarball)

npm packages come the same way: `npm pack NAME@VERSION --pack-destination <cache>/downloads`
(npm talks to its registry; nothing is installed, no scripts run) and the tarball's one top folder
(`package/`, or the repository's name for some) is unpacked to `<cache>/src/npm-<name>-<version>`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "swarm-lsp-bench"


def cache_dir() -> Path:
    folder = Path(os.environ.get("SWARM_LSP_BENCH_DIR") or DEFAULT_CACHE).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _normalised(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def download_sdist(name: str, version: str) -> Path:
    """The sdist archive of NAME==VERSION in the cache's downloads folder (fetched on first use)."""
    downloads = cache_dir() / "downloads"
    downloads.mkdir(exist_ok=True)
    archive = _find_archive(downloads, name, version)
    if archive is not None:
        return archive
    print(f"downloading the {name}=={version} sdist from PyPI ...", file=sys.stderr)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        f"{name}=={version}",
        "-d",
        str(downloads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    archive = _find_archive(downloads, name, version)
    if archive is None:
        raise RuntimeError(
            f"pip could not download the {name}=={version} sdist (exit {result.returncode}):\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return archive


def _find_archive(folder: Path, name: str, version: str) -> Path | None:
    wanted = f"{_normalised(name)}-{version}"
    for path in sorted(folder.iterdir()):
        stem = path.name
        for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".zip"):
            if stem.endswith(suffix) and _normalised(stem[: -len(suffix)]) == _normalised(wanted):
                return path
    return None


def project_source(name: str, version: str) -> Path:
    """The unpacked sdist of NAME==VERSION in `<cache>/src/<name>-<version>` (read it, don't edit it)."""
    target = cache_dir() / "src" / f"{_normalised(name)}-{version}"
    if (target / ".complete").is_file():
        return target
    return _unpack_once(download_sdist(name, version), target, f"{name}=={version}")


def _unpack_once(archive: Path, target: Path, label: str) -> Path:
    """Unpack `archive` (a tarball or zip) to `target` once; its single top folder becomes `target`."""
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent.parent))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(staging)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        entries = list(staging.iterdir())
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(top), str(target))
        (target / ".complete").write_text(f"{label} from {archive.name}\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _npm_archive_name(name: str, version: str) -> str:
    # npm names a scoped package's tarball `scope-name-version.tgz` (no "@", "/" becomes "-")
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def download_npm(name: str, version: str) -> Path:
    """The npm tarball of NAME@VERSION in the cache's downloads folder (fetched on first use)."""
    downloads = cache_dir() / "downloads"
    downloads.mkdir(exist_ok=True)
    archive = downloads / _npm_archive_name(name, version)
    if archive.is_file():
        return archive
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is not on PATH; it is needed to fetch {name}@{version}")
    print(f"downloading the {name}@{version} tarball from the npm registry ...", file=sys.stderr)
    command = [npm, "pack", f"{name}@{version}", "--pack-destination", str(downloads), "--silent"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if not archive.is_file():
        raise RuntimeError(
            f"npm could not download {name}@{version} (exit {result.returncode}):\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return archive


def npm_source(name: str, version: str) -> Path:
    """The unpacked npm tarball of NAME@VERSION in `<cache>/src/npm-<name>-<version>` (read it only)."""
    target = cache_dir() / "src" / f"npm-{_normalised(name.lstrip('@').replace('/', '-'))}-{version}"
    if (target / ".complete").is_file():
        return target
    return _unpack_once(download_npm(name, version), target, f"{name}@{version}")


def fresh_copy(source: Path, destination: Path, *, leave_out: tuple[str, ...] = ()) -> Path:
    """A writable copy of `source` at `destination` (replacing what was there), marker file and
    the names matching the glob patterns `leave_out` left out."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".complete", *leave_out))
    return destination


def count_files(root: Path) -> int:
    return sum(1 for path in root.rglob("*") if path.is_file())


def scratch_dir(label: str) -> Path:
    """A new empty folder under the cache for one run's workspace copies and index data."""
    runs = cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{label}.", dir=runs))


def warm_dir(label: str) -> Path:
    """A folder kept between runs (a workspace copy and its index, whose embedding cache is reused)."""
    folder = cache_dir() / "warm" / label
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def warm_workspace(label: str, *, fresh: bool) -> tuple[Path, Path]:
    """(workspace, data) in `warm_dir(label)`: the workspace folder emptied and created again, the
    index data kept (its embedding cache spares the next run the embedding) unless `fresh`."""
    scratch = warm_dir(label)
    root, data = scratch / "workspace", scratch / "data"
    if root.exists():
        shutil.rmtree(root)
    if fresh and data.exists():
        shutil.rmtree(data)
    root.mkdir()
    return root, data


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine_line() -> str:
    import platform

    cores = os.cpu_count() or 0
    system = f"{platform.machine()} {platform.system()}"
    return f"{system}, {cores} logical cores, Python {platform.python_version()}"

"""A real PostgreSQL server with pgvector, started from its binaries in a temporary directory.

The binaries come from the system (``/usr/lib/postgresql/*/bin``) when it has pgvector, else
from the ``pgserver`` wheel on PyPI, which bundles PostgreSQL and pgvector (Debian bookworm
has no pgvector package). PostgreSQL refuses to run as root, so under root the server runs as
``nobody``. Without binaries that have pgvector the tests that need it are skipped, saying so.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kapell.net import free_port


def _bin_dirs() -> list[Path]:
    dirs = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    spec = importlib.util.find_spec("pgserver")  # not imported: it warns at import time
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin")
    return dirs


def _with_pgvector(bin_dir: Path) -> bool:
    if not (bin_dir / "initdb").exists() or not (bin_dir / "pg_config").exists():
        return False
    share = subprocess.run(
        [str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (Path(share) / "extension" / "vector.control").exists()


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "nobody", "--", *argv]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL with pgvector available, stopped after the module."""
    bin_dir = next((d for d in _bin_dirs() if _with_pgvector(d)), None)
    if bin_dir is None:
        pytest.skip(
            "no PostgreSQL binaries with pgvector: install the pgserver wheel "
            "(pip install pgserver) or a postgresql-NN-pgvector package"
        )
    # Not pytest's tmp_path: its parents are private to root, and the server may run as nobody.
    root = Path(tempfile.mkdtemp(prefix="kapell-postgres-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        shutil.chown(data, "nobody")
    os.chmod(root, 0o755)
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                         "--auth=trust", "--encoding=UTF8", "--no-sync"]),
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        _as_server_user([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
                         "-h", "127.0.0.1", "-k", str(root), "-c", "fsync=off"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root,
    )  # fmt: skip
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        _wait_ready(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if server.poll() is not None:
                assert server.stderr is not None
                raise AssertionError(server.stderr.read().decode()) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

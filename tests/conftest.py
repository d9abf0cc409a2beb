"""Shared test configuration.

Hypothesis's per-example deadline is a timing assertion, and speed is measured in benchmarks,
not in tests: on a loaded 2-core CI machine a correct example can exceed it. Turned off for
every property test.

No test may touch the user's own kapell state (``~/.local/state/kapell``, or wherever
``KAPELL_STATE_DIR`` points): every command a test runs without ``--state-dir`` finds a
temporary one instead.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("kapell", deadline=None)
settings.load_profile("kapell")


@pytest.fixture(autouse=True, scope="session")
def _own_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("kapell-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAPELL_STATE_DIR", str(state_dir))
        patch.setenv("XDG_STATE_HOME", str(state_dir.parent / "xdg-state"))
        yield state_dir

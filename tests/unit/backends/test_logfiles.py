"""Reading log files for `kapell logs`: the last lines, then what was appended (follow)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kapell.backends.local import logfiles


def test_tail_keeps_a_partial_last_line_for_following(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    path.write_bytes(b"one\ntwo\nthree\npart")
    assert logfiles.tail(path, 2) == (["two", "three"], 14)
    assert logfiles.tail(path, 2, partial=True) == (["three", "part"], 18)
    assert logfiles.tail(path, 0) == ([], 14)
    assert logfiles.tail(path, 10) == (["one", "two", "three"], 14)


def test_read_from_returns_whole_lines_and_where_to_go_on(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    path.write_bytes(b"one\ntw")
    lines, offset = logfiles.read_from(path, 0)
    assert (lines, offset) == (["one"], 4)
    with path.open("ab") as f:
        f.write(b"o\nthree\n")
    assert logfiles.read_from(path, offset) == (["two", "three"], 14)
    assert logfiles.read_from(path, 14) == ([], 14)
    path.write_bytes(b"new\n")  # truncated (or replaced): read again from the start
    assert logfiles.read_from(path, 14) == (["new"], 4)


@given(st.lists(st.text(alphabet="ab \t\r\x0c", max_size=300), max_size=400), st.integers(0, 500))
def test_tail_of_a_long_file_is_its_last_lines(lines: list[str], n: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.log"
        text = "".join(line + "\n" for line in lines)
        path.write_text(text)
        assert logfiles.tail(path, n) == ((lines[-n:] if n else []), len(text.encode()))

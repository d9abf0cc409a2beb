"""Stop strings over streamed text: the result must not depend on how the text was chunked."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from kapell.engines.openai_server.stops import StopMatcher

text = st.text(alphabet="abc", max_size=30)
stops = st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=3)


def _run(chunks: list[str], stop_strings: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stop_strings)
    out = "".join(matcher.feed(c) for c in chunks)
    return out + matcher.flush(), matcher.stopped


def _split(whole: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(whole), *(c % (len(whole) + 1) for c in cuts)})
    return [whole[a:b] for a, b in itertools.pairwise(points)]


@given(text, st.text(alphabet="abc", min_size=1, max_size=4), st.lists(st.integers(0, 40)))
def test_one_stop_string_cuts_at_its_first_occurrence_however_chunked(
    whole: str, stop: str, cuts: list[int]
) -> None:
    out, stopped = _run(_split(whole, cuts), [stop])
    found = whole.find(stop)
    assert (out, stopped) == ((whole[:found], True) if found >= 0 else (whole, False))


@given(text, stops, st.lists(st.integers(0, 40)))
def test_output_is_a_prefix_free_of_stops_followed_by_a_stop(
    whole: str, stop_strings: list[str], cuts: list[int]
) -> None:
    out, stopped = _run(_split(whole, cuts), stop_strings)
    assert whole.startswith(out)
    assert not any(s in out for s in stop_strings)
    if stopped:
        assert any(whole[len(out) :].startswith(s) for s in stop_strings)
    else:
        assert out == whole


def test_no_stops_passes_text_straight_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == "abc"
    assert matcher.flush() == ""

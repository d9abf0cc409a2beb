"""hashembed: deterministic unit vectors whose cosine rewards shared words."""

from __future__ import annotations

import asyncio
import math

import pytest

from kapell.engines.hashembed.backend import HashEmbedBackend, dimensions_of, embed_text


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_vectors_are_unit_and_deterministic() -> None:
    v = embed_text("Rack railways climb steep gradients", 128)
    assert len(v) == 128 and math.isclose(sum(x * x for x in v), 1.0)
    assert v == embed_text("rack RAILWAYS climb, steep gradients!", 128)
    assert embed_text("...", 64) == [0.0] * 64


def test_shared_words_score_higher_than_unrelated_text() -> None:
    query = embed_text("how is black tea oxidised", 256)
    related = embed_text("black tea leaves are oxidised before drying", 256)
    unrelated = embed_text("the locomotive pulled forty freight wagons", 256)
    assert _cos(query, related) > 0.4 > _cos(query, unrelated)


def test_the_backend_embeds_the_text_behind_its_byte_tokens() -> None:
    backend = HashEmbedBackend(32)
    [vector] = asyncio.run(backend.embed([backend.encode("héllo wörld")]))
    assert vector == embed_text("héllo wörld", 32)


@pytest.mark.parametrize("recipe", ["hash-ngrams-0", "hash-ngrams-9000", "ngrams-256", "256"])
def test_bad_recipes_say_what_is_expected(recipe: str) -> None:
    with pytest.raises(ValueError, match="expected hash-ngrams-N"):
        dimensions_of(recipe)

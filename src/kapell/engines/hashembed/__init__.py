"""``hashembed``: an embedding-only engine of hashed word and character n-grams (not learned).

It exists so that vector stores can be built, searched and tested with no model download: its
vectors match texts that share words, not texts that share meaning.
"""

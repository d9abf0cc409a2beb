"""Vector stores behind the gateway's OpenAI-compatible ``/v1/vector_stores`` and ``/v1/files``.

``catalog`` keeps what the API lists (stores, files, which file is in which store) in SQLite;
``chunking`` cuts text into overlapping chunks; ``index`` holds the vectors (``LanceIndex``
embedded, ``PgVectorIndex`` on a PostgreSQL server); ``service`` ties them to the store's
embedding Model; ``routes`` is the HTTP surface.
"""

"""The sidecar a store runs as on Kubernetes, as real processes: a ``hashembed`` engine and
``python -m kapell.gateway.vectors`` beside it, called with the openai client."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import openai

from kapell.net import free_port, wait_http
from tests.integration.sim_procs import processes


def test_the_sidecar_serves_its_store_through_the_engine_beside_it(tmp_path: Path) -> None:
    engine_port, sidecar_port = free_port(), free_port()
    engine = [sys.executable, "-m", "kapell.engines.hashembed", "--model", "hash-ngrams-128",
              "--served-name", "embed", "--port", str(engine_port)]  # fmt: skip
    sidecar = [sys.executable, "-m", "kapell.gateway.vectors", "--store", "handbook",
               "--embedding-model", "embed", "--dimensions", "128", "--data", str(tmp_path),
               "--embeddings-url", f"http://127.0.0.1:{engine_port}", "--host", "127.0.0.1",
               "--port", str(sidecar_port)]  # fmt: skip
    with processes([engine, sidecar]) as (engine_proc, sidecar_proc):
        wait_http(f"http://127.0.0.1:{engine_port}/health", process=engine_proc)
        wait_http(f"http://127.0.0.1:{sidecar_port}/healthz", process=sidecar_proc)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{sidecar_port}/v1", api_key="unused", max_retries=0
        )
        assert [s.id for s in client.vector_stores.list()] == ["handbook"]
        for name, text in (
            ("a.txt", "owls hunt mice at night"),
            ("b.txt", "tulips bloom in spring"),
        ):
            client.vector_stores.files.upload_and_poll(
                vector_store_id="handbook", file=(name, io.BytesIO(text.encode()))
            )
        [best, _] = client.vector_stores.search("handbook", query="when do tulips bloom?")
        assert best.filename == "b.txt"
    assert (tmp_path / "catalog.db").is_file() and (tmp_path / "handbook").is_dir()

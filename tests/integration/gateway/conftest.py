"""Servers on real sockets, run on an event loop in a background thread.

Tests call the gateway with the official ``openai`` client (or httpx) from the main thread,
as a user would, while the gateway and stub engines run on the loop here.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from stub_engine import StubEngine

from kapell.gateway.app import Gateway
from kapell.gateway.config import GatewayConfig
from kapell.gateway.endpoints import StaticEndpointSource

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread, with helpers to start servers on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[uvicorn.Server] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def serve(self, app: Any) -> str:
        """Serve ``app`` on a fresh localhost port; returns its base URL."""
        return self.run(self.start_server(app))

    async def start_server(self, app: Any) -> str:
        """On the loop: serve ``app`` on a fresh localhost port; returns its base URL."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        )
        self._servers.append(server)
        asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.005)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        self.run(asyncio.sleep(0.3))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


class Stack:
    """A gateway in front of stub engines, all on ``loop_thread``."""

    def __init__(
        self, loop_thread: LoopThread, config: GatewayConfig, vectors_dir: Path | None = None
    ) -> None:
        self.loop_thread = loop_thread
        self.source = StaticEndpointSource()
        self.gateway = Gateway(self.source, config, vectors_dir=vectors_dir)
        self.url = loop_thread.serve(self.gateway.app)
        self.engines: dict[str, StubEngine] = {}

    def add_engine(self, name: str, **kwargs: Any) -> str:
        engine = StubEngine(name, **kwargs)
        self.engines[name] = engine
        return self.loop_thread.serve(engine.app)

    def set_endpoints(self, model: str, urls: list[str]) -> None:
        self.loop_thread.call(lambda: self.source.set_endpoints(model, urls))


@pytest.fixture
def make_stack(loop_thread: LoopThread) -> Callable[..., Stack]:
    def make(**config: Any) -> Stack:
        return Stack(loop_thread, GatewayConfig(**config))

    return make

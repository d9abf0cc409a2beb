"""Running an engine server: ``python -m kapell.engines.<name> --model ... --port ...``.

Every engine's ``__main__`` is a call to :func:`run_engine`, so all engines take the same
common arguments, answer ``/health`` with 503 while the backend loads, stay quiet (warnings
only), and exit with status 0 after a graceful shutdown on SIGTERM or SIGINT. A backend that
fails to load ends the process with status 1 and a one-line reason, so the supervisor restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Generator, Sequence

import uvicorn
from prometheus_client import CollectorRegistry

from kapell.engines.openai_server.app import create_app
from kapell.engines.openai_server.protocol import Backend

BackendFactory = Callable[[argparse.Namespace], Backend]


class _QuietServer(uvicorn.Server):
    """uvicorn, but a handled SIGTERM ends in a normal exit rather than being re-raised."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def engine_argument_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The arguments every engine takes; an engine adds its own to the returned parser."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model", required=True, help="model path or id")
    parser.add_argument("--served-name", help="model name clients ask for (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    return parser


async def _serve(server: uvicorn.Server, backend: Backend) -> None:
    serving = asyncio.create_task(server.serve())
    loading = asyncio.create_task(backend.start())
    try:
        done, _ = await asyncio.wait({serving, loading}, return_when=asyncio.FIRST_COMPLETED)
        if loading in done and loading.exception() is not None:
            server.should_exit = True
        await serving
        if not loading.done():
            loading.cancel()
        await asyncio.gather(loading, return_exceptions=False)
    finally:
        await backend.stop()


def run_engine(
    parser: argparse.ArgumentParser,
    build_backend: BackendFactory,
    argv: Sequence[str] | None,
    *,
    registry: CollectorRegistry | None = None,
) -> int:
    """Parse ``argv``, build the backend and serve it until a signal; the process exit status.

    ``registry`` is where ``/metrics`` reads from; pass the one the backend registers its own
    series in.
    """
    args = parser.parse_args(argv)
    backend = build_backend(args)
    app = create_app(backend, args.served_name or args.model, registry)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", access_log=False
    )
    try:
        asyncio.run(_serve(_QuietServer(config), backend))
    except asyncio.CancelledError:
        return 0
    except Exception as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    return 0

"""The ``kubernetes`` Service's address for pods on serving nodes: ``https://10.96.0.1:443``.

In a cluster, pods reach the apiserver at the first address of the service range through
kube-proxy. Here the apiserver listens on the host's loopback, which a pod's network namespace
cannot reach, so the node agent puts that address on the host's ``lo`` and forwards its port 443
to the apiserver, bytes only: TLS runs end to end between the pod and the apiserver, whose
certificate names that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kapell.devcluster import podnet
from kapell.devcluster.pki import SERVICE_IP

log = logging.getLogger(__name__)

SERVICE_PORT = 443
SERVICE_URL = f"https://{SERVICE_IP}:{SERVICE_PORT}"
CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class ApiServerProxy:
    """Forwards ``SERVICE_IP:443`` on this host to the apiserver at ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError as exc:
            log.warning("apiserver proxy: cannot reach %s:%d: %s", *self._target, exc)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    async def start(self) -> None:
        podnet.add_local_address(SERVICE_IP)
        self._server = await asyncio.start_server(self._forward, SERVICE_IP, SERVICE_PORT)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        podnet.remove_local_address(SERVICE_IP)

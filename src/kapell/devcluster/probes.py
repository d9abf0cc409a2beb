"""Running one container probe against a pod on a serving node, as the kubelet would.

HTTP and TCP probes go from the host to the pod's address (the host routes to every pod); exec
probes run inside the pod's network namespace with the container's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import httpx

from kapell.devcluster.podspec import Probe, StartError, Unrunnable, resolve_argv

log = logging.getLogger(__name__)


async def run_probe(
    probe: Probe, pod_ip: str, in_netns: Sequence[str], env: Mapping[str, str], python: str
) -> bool:
    """One attempt: True on success. ``in_netns`` prefixes a command to run it in the pod."""
    host = probe.host or pod_ip
    try:
        if probe.kind == "httpGet":
            url = f"{probe.scheme.lower()}://{host}:{probe.port}{probe.path}"
            async with httpx.AsyncClient(trust_env=False, verify=False) as http:
                response = await http.get(url, headers=dict(probe.headers), timeout=probe.timeout_s)
            return 200 <= response.status_code < 400
        if probe.kind == "tcpSocket":
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, probe.port), probe.timeout_s
            )
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return await _exec(probe, in_netns, env, python)
    except (httpx.HTTPError, OSError, TimeoutError):
        return False


async def _exec(probe: Probe, in_netns: Sequence[str], env: Mapping[str, str], python: str) -> bool:
    try:
        argv = resolve_argv({"command": list(probe.command)}, env, python)
    except (StartError, Unrunnable) as exc:
        log.info("exec probe cannot start: %s", exc)
        return False
    process = await asyncio.create_subprocess_exec(
        *in_netns, *argv, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(process.wait(), probe.timeout_s) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return False

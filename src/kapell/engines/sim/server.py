"""The ``sim`` engine: kapell's OpenAI server over a simulated continuous-batching replica.

No model runs. A scheduler task forms iterations with the same :class:`ContinuousBatcher` the
digital twin uses, sleeps for each iteration's modelled duration (divided by ``speedup``) and
then hands every sequence its new token. Load tests through the real gateway therefore see
the queueing, batching and KV-cache limits of the modelled GPU, on a machine without one.

Tokens are whitespace-separated words (ids from a stable hash), outputs are filler words, and
every generation runs to ``max_tokens`` (as with ``ignore_eos``), so a trace's output lengths
are reproduced exactly. ``system_fingerprint`` says the timings are simulated.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from kapell.engines.openai_server.protocol import (
    ChatMessage,
    EmbeddingsUnsupportedError,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    render_chat_plainly,
)
from kapell.engines.sim.batcher import ContinuousBatcher, SimSequence
from kapell.engines.sim.latency import LatencyProfile

_WORDS = (
    "the",
    "model",
    "is",
    "simulated",
    "and",
    "its",
    "timings",
    "come",
    "from",
    "a",
    "latency",
    "profile",
)


def _word_id(word: str, vocab_size: int) -> int:
    return (
        int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % vocab_size
    )


def block_hashes(token_ids: Sequence[int], block_tokens: int) -> list[bytes]:
    """Chained hashes of the full ``block_tokens`` blocks of a prompt (as vLLM's prefix cache)."""
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(token_ids) - block_tokens + 1, block_tokens):
        block = ",".join(map(str, token_ids[start : start + block_tokens])).encode()
        previous = hashlib.blake2b(previous + b"|" + block, digest_size=8).digest()
        hashes.append(previous)
    return hashes


@dataclass(eq=False)
class _Stream:
    seq: SimSequence
    delivered: int = 0
    changed: asyncio.Event | None = None


class SimBackend:
    """A :class:`kapell.engines.openai_server.Backend` whose timings come from a profile."""

    def __init__(
        self, profile: LatencyProfile, *, cold_start_s: float = 0.0, speedup: float = 1.0
    ) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.profile = profile
        self.cold_start_s = cold_start_s
        self.speedup = speedup
        self.batcher = ContinuousBatcher(profile, prefix_block_tokens=profile.kv_block_tokens)
        self._streams: dict[SimSequence, _Stream] = {}
        self._ready = False
        self._work: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._next_tag = 0

    # -- Backend protocol -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def system_fingerprint(self) -> str:
        return f"kapell-sim:{self.profile.name}:simulated-timings"

    @property
    def max_model_len(self) -> int:
        return self.profile.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.profile.vocab_size

    @property
    def supports_embeddings(self) -> bool:
        return False

    async def start(self) -> None:
        # The cold start counts from process launch, as a real engine's would: Python's own
        # start-up (imports, server) is part of it, not added on top.
        self._work = asyncio.Event()
        await asyncio.sleep(max(0.0, self.cold_start_s / self.speedup - _process_age_s()))
        self._loop_task = asyncio.create_task(self._run())
        self._ready = True

    async def stop(self) -> None:
        self._ready = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    def encode(self, text: str) -> list[int]:
        return [_word_id(w, self.profile.vocab_size) for w in re.findall(r"\S+", text)]

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return render_chat_plainly(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        ids = list(request.prompt_token_ids)
        self._next_tag += 1
        seq = SimSequence(
            prompt_tokens=max(len(ids), 1),
            max_output_tokens=request.params.max_tokens,
            prefix_blocks=block_hashes(ids, self.profile.kv_block_tokens),
            tag=self._next_tag,
        )
        stream = _Stream(seq, changed=asyncio.Event())
        self._streams[seq] = stream
        self.batcher.submit(seq)
        assert self._work is not None and stream.changed is not None
        self._work.set()
        try:
            while stream.delivered < seq.max_output_tokens:
                await stream.changed.wait()
                stream.changed.clear()
                produced = self._produced(seq)
                for n in range(stream.delivered, produced):
                    last = n + 1 == seq.max_output_tokens
                    yield GenerationChunk(
                        text=" " + _WORDS[(seq.tag + n) % len(_WORDS)],
                        finish_reason="length" if last else None,
                    )
                stream.delivered = max(stream.delivered, produced)
        finally:
            self._streams.pop(seq, None)
            self.batcher.abort(seq)

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        raise EmbeddingsUnsupportedError("the sim engine has no embeddings")

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=self.batcher.num_running,
            num_waiting=self.batcher.num_waiting,
            kv_cache_usage=min(self.batcher.kv_usage, 1.0),
        )

    # -- the iteration loop -----------------------------------------------------------------

    def _produced(self, seq: SimSequence) -> int:
        if seq.done:
            return seq.max_output_tokens
        return seq.generated(self.batcher.iteration)

    async def _run(self) -> None:
        """Step the batcher forever, each iteration taking its modelled time on the loop clock."""
        loop = asyncio.get_running_loop()
        assert self._work is not None
        clock_s = loop.time()
        while True:
            plan = self.batcher.plan()
            if plan is None:
                self._work.clear()
                await self._work.wait()
                clock_s = loop.time()
                continue
            clock_s = max(clock_s, loop.time() - 0.05) + plan.duration_s / self.speedup
            await asyncio.sleep(max(clock_s - loop.time(), 0.0))
            result = self.batcher.apply(plan)
            for seq in (*self.batcher.decoding, *result.first_token, *result.finished):
                stream = self._streams.get(seq)
                if stream is not None and stream.changed is not None:
                    stream.changed.set()


def _process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            uptime_s = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))

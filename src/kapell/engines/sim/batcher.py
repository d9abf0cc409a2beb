"""A continuous-batching scheduler over the latency model, shared by the ``sim`` engine and the twin.

It decides what one engine iteration holds, the way vLLM's scheduler does: requests wait in
FCFS order and are admitted while the KV cache and ``max_num_seqs`` allow; every iteration
carries one new token for each decoding sequence plus prompt chunks up to the token budget
(chunked prefill); a prompt's last chunk yields its first token. A request reserves KV for its
prompt and its full output at admission, so nothing is ever preempted (an approximation: vLLM
admits on the prompt and preempts on overflow).

Prefix caching: prompts carry prefix block hashes; an LRU of blocks per replica, holding as
many blocks as the KV cache, skips the prefill of a prompt's leading cached blocks.

Decode progress is one shared iteration counter, so a run of ``k`` decode-only iterations is
O(log n) to apply and its duration has a closed form: the discrete-event simulator jumps from
event to event instead of stepping every iteration, while the engine server steps one
iteration at a time and sleeps for its duration.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from kapell.engines.sim.latency import LatencyProfile


@dataclass(eq=False)
class SimSequence:
    """One request inside a replica. ``generated`` is kept by the batcher."""

    prompt_tokens: int
    max_output_tokens: int
    prefix_blocks: Sequence[int | bytes] = ()
    tag: int = -1
    """The owner's handle for this request (an index, an id)."""
    cached_tokens: int = 0
    prefilled_tokens: int = 0
    decode_base: int = -1
    """Iteration count at which this sequence had generated zero tokens; -1 while prefilling."""
    finish_iteration: int = -1
    done: bool = False

    def generated(self, iteration: int) -> int:
        """Output tokens produced by decode iteration count ``iteration``."""
        if self.decode_base < 0:
            return 0
        return min(iteration - self.decode_base, self.max_output_tokens)


class PrefixCache:
    """An LRU set of prefix blocks; a prompt hits on its longest cached leading run."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int | bytes, None] = OrderedDict()

    def leading_hits(self, blocks: Sequence[int | bytes]) -> int:
        hits = 0
        for block in blocks:
            if block not in self._blocks:
                break
            self._blocks.move_to_end(block)
            hits += 1
        return hits

    def insert(self, blocks: Sequence[int | bytes]) -> None:
        for block in blocks:
            self._blocks[block] = None
            self._blocks.move_to_end(block)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)


@dataclass
class StepPlan:
    """The contents of one iteration and how long it takes."""

    prefill: list[tuple[SimSequence, int]]
    decode_seqs: int
    decode_context_tokens: int
    duration_s: float


@dataclass
class StepResult:
    """Sequences whose first token came out, and sequences that finished."""

    first_token: list[SimSequence] = field(default_factory=list)
    finished: list[SimSequence] = field(default_factory=list)


class ContinuousBatcher:
    """The scheduler state of one replica (see the module docstring)."""

    def __init__(self, profile: LatencyProfile, *, prefix_block_tokens: int) -> None:
        self.profile = profile
        self.prefix_block_tokens = prefix_block_tokens
        self.prefix_cache = PrefixCache(max(profile.kv_cache_tokens // prefix_block_tokens, 1))
        self.waiting: deque[SimSequence] = deque()
        self.prefilling: list[SimSequence] = []
        self.decoding: set[SimSequence] = set()
        self._finish_heap: list[tuple[int, int, SimSequence]] = []
        self._heap_order = 0
        self.iteration = 0
        self.reserved_kv_tokens = 0
        self._decode_prompt_sum = 0
        self._decode_base_sum = 0
        self.prefix_hit_tokens = 0
        self.prefix_query_tokens = 0

    # -- load -------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        return self.reserved_kv_tokens / self.profile.kv_cache_tokens

    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.decoding)

    def decode_context_tokens(self) -> int:
        """Tokens of context the decoding sequences attend to at the next iteration."""
        n = len(self.decoding)
        return self._decode_prompt_sum + n * self.iteration - self._decode_base_sum

    # -- requests ---------------------------------------------------------------------------

    def submit(self, seq: SimSequence) -> None:
        self.waiting.append(seq)

    def abort(self, seq: SimSequence) -> None:
        """Drop ``seq`` wherever it is and free its KV reservation."""
        if seq.done:
            return
        if seq in self.decoding:
            self._leave_decoding(seq)
        elif seq in self.prefilling:
            self.prefilling.remove(seq)
            self.reserved_kv_tokens -= seq.prompt_tokens + seq.max_output_tokens
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.done = True

    def _admit(self) -> None:
        profile = self.profile
        while self.waiting and self.num_running < profile.max_num_seqs:
            seq = self.waiting[0]
            need = seq.prompt_tokens + seq.max_output_tokens
            if self.reserved_kv_tokens + need > profile.kv_cache_tokens and self.num_running:
                break  # a request larger than the cache still runs alone
            self.waiting.popleft()
            self.reserved_kv_tokens += need
            self.prefix_query_tokens += seq.prompt_tokens
            if seq.prefix_blocks:
                hits = self.prefix_cache.leading_hits(seq.prefix_blocks)
                seq.cached_tokens = min(hits * self.prefix_block_tokens, seq.prompt_tokens - 1)
                self.prefix_hit_tokens += seq.cached_tokens
            seq.prefilled_tokens = seq.cached_tokens
            self.prefilling.append(seq)

    # -- iterations -------------------------------------------------------------------------

    def plan(self) -> StepPlan | None:
        """The next iteration, admitting waiting requests first; ``None`` when idle."""
        self._admit()
        if not self.prefilling and not self.decoding:
            return None
        profile = self.profile
        decode_seqs = len(self.decoding)
        budget = max(profile.max_batched_tokens - decode_seqs, 1)
        prefill: list[tuple[SimSequence, int]] = []
        attention_s = 0.0
        sampled = decode_seqs
        for seq in self.prefilling:
            if budget <= 0:
                break
            chunk = min(budget, seq.prompt_tokens - seq.prefilled_tokens)
            prefill.append((seq, chunk))
            attention_s += profile.prefill_attention_s(chunk, seq.prefilled_tokens)
            budget -= chunk
            if seq.prefilled_tokens + chunk >= seq.prompt_tokens:
                sampled += 1
        context = self.decode_context_tokens()
        duration_s = profile.step_s(
            prefill_tokens=sum(chunk for _, chunk in prefill),
            prefill_attention_s=attention_s,
            decode_seqs=decode_seqs,
            decode_context_tokens=context,
            sampled_seqs=sampled,
        )
        return StepPlan(prefill, decode_seqs, context, duration_s)

    def apply(self, plan: StepPlan) -> StepResult:
        """Carry out ``plan``: decoders gain a token, prompt chunks advance."""
        self.iteration += 1
        result = StepResult()
        for seq, chunk in plan.prefill:
            seq.prefilled_tokens += chunk
            if seq.prefilled_tokens >= seq.prompt_tokens:
                self.prefilling.remove(seq)
                if seq.prefix_blocks:
                    self.prefix_cache.insert(seq.prefix_blocks)
                result.first_token.append(seq)
                self._enter_decoding(seq)
        self._pop_finished(result)
        return result

    def decode_only(self) -> bool:
        """True when the next iterations are pure decode until something finishes or arrives."""
        return bool(self.decoding) and not self.prefilling and not self._admissible()

    def _admissible(self) -> bool:
        if not self.waiting or self.num_running >= self.profile.max_num_seqs:
            return False
        seq = self.waiting[0]
        need = seq.prompt_tokens + seq.max_output_tokens
        return (
            self.reserved_kv_tokens + need <= self.profile.kv_cache_tokens or not self.num_running
        )

    def iterations_to_next_finish(self) -> int:
        self._drop_stale()
        return self._finish_heap[0][0] - self.iteration

    def decode_run_s(self, iterations: int) -> float:
        """Duration of the next ``iterations`` decode-only iterations (closed form)."""
        batch = len(self.decoding)
        a_s, b_s = self.profile.decode_step_coefficients(batch)
        k = iterations
        return k * a_s + b_s * (k * self.decode_context_tokens() + batch * k * (k - 1) / 2)

    def iterations_by(self, elapsed_s: float) -> int:
        """The fewest decode-only iterations whose run lasts at least ``elapsed_s``."""
        batch = len(self.decoding)
        a_s, b_s = self.profile.decode_step_coefficients(batch)
        c0 = self.decode_context_tokens()
        qa, qb = b_s * batch / 2, a_s + b_s * c0 - b_s * batch / 2
        if qa > 0:
            k = math.ceil((-qb + math.sqrt(qb * qb + 4 * qa * elapsed_s)) / (2 * qa))
        else:
            k = math.ceil(elapsed_s / qb)
        k = max(k, 1)
        while k > 1 and self.decode_run_s(k - 1) >= elapsed_s:
            k -= 1
        while self.decode_run_s(k) < elapsed_s:
            k += 1
        return k

    def apply_decode_run(self, iterations: int) -> StepResult:
        """Carry out ``iterations`` decode-only iterations at once."""
        self.iteration += iterations
        result = StepResult()
        self._pop_finished(result)
        return result

    # -- bookkeeping ------------------------------------------------------------------------

    def _enter_decoding(self, seq: SimSequence) -> None:
        seq.decode_base = self.iteration - 1  # the prefill's last chunk made token one
        seq.finish_iteration = seq.decode_base + seq.max_output_tokens
        self.decoding.add(seq)
        self._decode_prompt_sum += seq.prompt_tokens
        self._decode_base_sum += seq.decode_base
        self._heap_order += 1
        heapq.heappush(self._finish_heap, (seq.finish_iteration, self._heap_order, seq))

    def _leave_decoding(self, seq: SimSequence) -> None:
        self.decoding.discard(seq)
        self._decode_prompt_sum -= seq.prompt_tokens
        self._decode_base_sum -= seq.decode_base
        self.reserved_kv_tokens -= seq.prompt_tokens + seq.max_output_tokens

    def _drop_stale(self) -> None:
        heap = self._finish_heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)

    def _pop_finished(self, result: StepResult) -> None:
        heap = self._finish_heap
        self._drop_stale()
        while heap and heap[0][0] <= self.iteration:
            _, _, seq = heapq.heappop(heap)
            if seq.done:
                continue
            self._leave_decoding(seq)
            seq.done = True
            result.finished.append(seq)

"""Placement policies: the baselines of the FGD paper and kapell's own default.

Each policy ranks the feasible nodes of one request and returns a ``Decision``. The
baselines follow the FGD simulator's scoring (integer scores 0-100, ties broken uniformly
at random, as kube-scheduler does), so their numbers are comparable with the paper's:

- ``random``: any feasible node; a share pod takes a random GPU that fits.
- ``best-fit``: least free CPU and GPU after placement (weights 1/2, min-max normalised).
- ``dot-product``: Tetris-style alignment of free (CPU, GPU) with the request.
- ``gpu-packing``: prefer partly used GPUs, then partly used nodes, then idle nodes.
- ``gpu-clustering``: prefer nodes already running pods of the same GPU shape.
- ``fgd``: least growth of fragmentation over the typical workload (sigmoid score).
- ``kapell``: FGD plus the GPU capacity a placement strands behind CPU or memory
  (``KapellPolicy``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kapell.policy.placement.fit import decision_for, feasible_nodes
from kapell.policy.placement.fragmentation import FragmentationModel, typical_shapes
from kapell.policy.placement.inventory import Decision, Inventory
from kapell.policy.placement.requests import GPU_MILLI, PodRequest
from kapell.policy.placement.stranding import FeedRatios

MAX_SPEC_CPU_MILLI = 128_000  # normalisation constants of the FGD simulator
MAX_SPEC_GPU_MILLI = 8_000
MAX_SCORE = 100


class Policy(Protocol):
    """Ranks feasible nodes for one request; ``None`` when nothing fits."""

    name: str

    def select(
        self, inv: Inventory, req: PodRequest, rng: np.random.Generator
    ) -> Decision | None: ...


class TieBreak:
    """Breaks score ties by a fixed random order of the nodes, drawn once per inventory.

    The FGD simulator's kube-scheduler ends up taking the first top-scored node in a node
    order shuffled once per run; a per-decision coin flip instead spreads pods that every
    node scores alike (CPU-only pods under GPU policies) and costs those policies 3 points.
    """

    def __init__(self) -> None:
        self.rank: npt.NDArray[np.int64] | None = None

    def pick(
        self,
        nodes: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float64] | npt.NDArray[np.int64],
        rng: np.random.Generator,
        size: int,
    ) -> int:
        """Index into ``nodes`` of the top score, first in the fixed order among ties."""
        if self.rank is None or self.rank.size != size:
            self.rank = rng.permutation(size)
        best = np.flatnonzero(scores == scores.max())
        return int(best[np.argmin(self.rank[nodes[best]])])


def _share_gpu_random(inv: Inventory, node: int, milli: int, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(inv.gpu_left[node] >= milli)))


class RandomPolicy:
    name = "random"

    def select(self, inv: Inventory, req: PodRequest, rng: np.random.Generator) -> Decision | None:
        nodes = np.flatnonzero(feasible_nodes(inv, req))
        if nodes.size == 0:
            return None
        node = int(rng.choice(nodes))
        gpu = _share_gpu_random(inv, node, req.gpu_milli, rng) if req.is_share else None
        return decision_for(inv, req, node, gpu)


class _ScoredPolicy:
    """Scores feasible nodes with ``score``; share pods take the best-fit GPU."""

    name = ""

    def __init__(self) -> None:
        self.ties = TieBreak()

    def score(
        self, inv: Inventory, nodes: npt.NDArray[np.int64], req: PodRequest
    ) -> npt.NDArray[np.int64]:
        raise NotImplementedError

    def select(self, inv: Inventory, req: PodRequest, rng: np.random.Generator) -> Decision | None:
        nodes = np.flatnonzero(feasible_nodes(inv, req))
        if nodes.size == 0:
            return None
        pick = self.ties.pick(nodes, self.score(inv, nodes, req), rng, len(inv.nodes))
        return decision_for(inv, req, int(nodes[pick]), None)


class BestFitPolicy(_ScoredPolicy):
    name = "best-fit"

    def score(
        self, inv: Inventory, nodes: npt.NDArray[np.int64], req: PodRequest
    ) -> npt.NDArray[np.int64]:
        cpu_after = (inv.cpu_left[nodes] - req.cpu_milli) / MAX_SPEC_CPU_MILLI
        gpu_after = (inv.gpu_left[nodes].sum(axis=1) - req.total_gpu_milli) / MAX_SPEC_GPU_MILLI
        raw = ((1.0 - 0.5 * cpu_after - 0.5 * gpu_after) * MAX_SCORE).astype(np.int64)
        low, high = raw.min(), raw.max()
        if high == low:
            return np.zeros_like(raw)
        normalised: npt.NDArray[np.int64] = (raw - low) * MAX_SCORE // (high - low)
        return normalised


class DotProductPolicy(_ScoredPolicy):
    name = "dot-product"

    def score(
        self, inv: Inventory, nodes: npt.NDArray[np.int64], req: PodRequest
    ) -> npt.NDArray[np.int64]:
        cpu = inv.cpu_left[nodes] * req.cpu_milli / MAX_SPEC_CPU_MILLI**2
        gpu = inv.gpu_left[nodes].sum(axis=1) * req.total_gpu_milli / MAX_SPEC_GPU_MILLI**2
        scores: npt.NDArray[np.int64] = ((1.0 - (cpu + gpu) / 2) * MAX_SCORE).astype(np.int64)
        return scores


def _affinity(req: PodRequest) -> str:
    """The GPU shape class the clustering policy groups by."""
    if req.gpu_count == 0:
        return ""
    return "share" if req.is_share else f"{req.gpu_count}-gpu"


class GpuClusteringPolicy:
    """Co-locates pods of the same GPU shape class; keeps a per-node count of each class."""

    name = "gpu-clustering"

    def __init__(self) -> None:
        self.classes: dict[int, dict[str, int]] = {}
        self.ties = TieBreak()

    def select(self, inv: Inventory, req: PodRequest, rng: np.random.Generator) -> Decision | None:
        nodes = np.flatnonzero(feasible_nodes(inv, req))
        if nodes.size == 0:
            return None
        tag = _affinity(req)
        if not tag:
            scores = np.zeros(nodes.size, dtype=np.int64)
        else:
            used = MAX_SCORE // 4 * (MAX_SPEC_GPU_MILLI - inv.gpu_left[nodes].sum(axis=1))
            scores = used // MAX_SPEC_GPU_MILLI
            for j, candidate in enumerate(nodes):
                present = self.classes.get(int(candidate), {})
                if present.get(tag, 0) > 0:
                    scores[j] += MAX_SCORE * 3 // 4 if len(present) == 1 else MAX_SCORE * 2 // 4
                elif not present:
                    scores[j] += MAX_SCORE // 4
        node: int = int(nodes[self.ties.pick(nodes, scores, rng, len(inv.nodes))])
        if tag:
            counts = self.classes.setdefault(node, {})
            counts[tag] = counts.get(tag, 0) + 1
        return decision_for(inv, req, node, None)

    def forget(self, req: PodRequest, decision: Decision) -> None:
        """Called on release so the class counts follow the cluster."""
        tag = _affinity(req)
        counts = self.classes.get(decision.node_index, {})
        if tag in counts:
            counts[tag] -= 1
            if counts[tag] == 0:
                del counts[tag]


class GpuPackingPolicy(_ScoredPolicy):
    """Partly used GPUs first, then free GPUs on partly used nodes, then idle nodes."""

    name = "gpu-packing"

    def score(
        self, inv: Inventory, nodes: npt.NDArray[np.int64], req: PodRequest
    ) -> npt.NDArray[np.int64]:
        if req.gpu_count == 0:
            return np.zeros(nodes.size, dtype=np.int64)
        left = inv.gpu_left[nodes]
        free = (left == GPU_MILLI).sum(axis=1)
        idle = free == inv.gpu_count[nodes]
        idle_score = np.maximum(MAX_SCORE // 3 - free, free)
        if req.is_share:
            tightest = np.where(left >= req.gpu_milli, left, GPU_MILLI + 1).min(axis=1)
            shared = np.maximum(MAX_SCORE - (tightest * 100 // GPU_MILLI) // 10, MAX_SCORE // 2)
            opens = np.maximum(MAX_SCORE // 2 - 1, MAX_SCORE // 3)
            busy_score = np.where(tightest == GPU_MILLI, opens, shared)
        else:
            busy_score = np.full(nodes.size, max(MAX_SCORE // 2 - req.gpu_count, MAX_SCORE // 3))
        scores: npt.NDArray[np.int64] = np.where(idle, idle_score, busy_score)
        return scores


def _sigmoid_score(delta: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """FGD's node score: 100 * sigmoid(fragmentation decrease / 1000), truncated."""
    return (MAX_SCORE / (1.0 + np.exp(-delta / 1000.0))).astype(np.int64)


class FgdPolicy:
    """Fragmentation Gradient Descent: the node (and GPU) whose fragmentation grows least."""

    name = "fgd"

    def __init__(self, workload: Iterable[PodRequest], coverage: float = 0.95) -> None:
        self.shapes = typical_shapes(workload, coverage)
        self.model: FragmentationModel | None = None
        self.ties = TieBreak()

    def _model(self, inv: Inventory) -> FragmentationModel:
        if self.model is None or self.model.inv is not inv:
            self.model = FragmentationModel(inv, self.shapes)
        self.model.refresh()
        return self.model

    def candidates(
        self, inv: Inventory, req: PodRequest
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(node, share GPU or -1, fragmentation increase) for every feasible placement.

        Candidates in the same state (node state, and for shares the GPU's free milli)
        have the same growth, so it is computed once per distinct state.
        """
        model = self._model(inv)
        nodes = np.flatnonzero(feasible_nodes(inv, req))
        if nodes.size == 0:
            return nodes, nodes, np.zeros(0)
        if req.is_share:
            node_idx, gpus = np.nonzero(inv.gpu_left[nodes] >= req.gpu_milli)
            nodes = nodes[node_idx]
            key = model.state_id[nodes] * (GPU_MILLI + 1) + inv.gpu_left[nodes, gpus]
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            after = model.after_share(nodes[first], gpus[first], req)[inverse]
        else:
            gpus = np.full(nodes.size, -1, dtype=np.int64)
            _, first, inverse = np.unique(
                model.state_id[nodes], return_index=True, return_inverse=True
            )
            after = model.after_whole(nodes[first], req)[inverse]
        return nodes, gpus, after - model.frag[nodes]

    def expected_loss_growth(
        self,
        inv: Inventory,
        req: PodRequest,
        nodes: npt.NDArray[np.int64],
        growth: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """The quantity the score minimises; for FGD, the fragmentation growth itself."""
        return growth

    def select(self, inv: Inventory, req: PodRequest, rng: np.random.Generator) -> Decision | None:
        if req.is_mig:
            return _first_mig_fit(inv, req)
        nodes, gpus, growth = self.candidates(inv, req)
        if nodes.size == 0:
            return None
        scores = _sigmoid_score(-self.expected_loss_growth(inv, req, nodes, growth))
        if req.is_share:
            # per node, the first GPU with the node's best score (the simulator's rule)
            order = np.lexsort((np.arange(nodes.size), -scores, nodes))
            first = np.ones(order.size, dtype=bool)
            first[1:] = nodes[order][1:] != nodes[order][:-1]
            keep = order[first]
            nodes, gpus, scores = nodes[keep], gpus[keep], scores[keep]
        pick = self.ties.pick(nodes, scores, rng, len(inv.nodes))
        gpu = int(gpus[pick]) if req.is_share else None
        return decision_for(inv, req, int(nodes[pick]), gpu)


class KapellPolicy(FgdPolicy):
    """kapell's default: FGD, plus a charge for GPU milli stranded behind CPU or memory.

    FGD's fragmentation is one pod deep, so it does not see a node's CPU or memory running
    out while GPUs are still free until the very last pod. kapell adds to FGD's
    fragmentation growth the growth of the node's stranded GPU milli (``FeedRatios``:
    free GPU beyond what the node's free CPU and memory can feed at the workload's CPU and
    memory per GPU milli), both in GPU milli, and keeps FGD's coarse sigmoid score and
    fixed tie order, which consolidate load.

    Only growth is charged; un-stranding earns no credit. A credit pulls flexible,
    CPU-light pods onto CPU-poor nodes, whose GPUs may be the only ones model-constrained
    pods can use: measured, it gained 0.3 points on a CPU-heavy workload and lost 0.24 on
    a GPU-model-constrained one (docs/placement.md).
    """

    name = "kapell"

    def __init__(self, workload: Iterable[PodRequest], coverage: float = 0.95) -> None:
        pods = list(workload)
        super().__init__(pods, coverage)
        self.feed = FeedRatios.of(pods)

    def expected_loss_growth(
        self,
        inv: Inventory,
        req: PodRequest,
        nodes: npt.NDArray[np.int64],
        growth: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        if self.feed is None:
            return growth
        stranded = self.feed.growth(
            inv.gpu_left[nodes].sum(axis=1), inv.cpu_left[nodes], inv.memory_left[nodes], req
        )
        out: npt.NDArray[np.float64] = growth + np.maximum(stranded, 0.0)
        return out


def _first_mig_fit(inv: Inventory, req: PodRequest) -> Decision | None:
    """MIG requests go to the fullest MIG GPU that has a slot (fragmentation is per slice)."""
    nodes = np.flatnonzero(feasible_nodes(inv, req))
    if nodes.size == 0:
        return None
    return decision_for(inv, req, int(nodes[0]), None)


POLICY_NAMES = (
    "random",
    "dot-product",
    "gpu-clustering",
    "gpu-packing",
    "best-fit",
    "fgd",
    "kapell",
)


def make_policy(name: str, workload: Iterable[PodRequest] = ()) -> Policy:
    """A fresh policy by name; FGD and kapell learn shapes from ``workload``."""
    if name == "random":
        return RandomPolicy()
    if name == "best-fit":
        return BestFitPolicy()
    if name == "dot-product":
        return DotProductPolicy()
    if name == "gpu-packing":
        return GpuPackingPolicy()
    if name == "gpu-clustering":
        return GpuClusteringPolicy()
    if name == "fgd":
        return FgdPolicy(workload)
    if name == "kapell":
        return KapellPolicy(workload)
    raise ValueError(
        f"unknown placement policy {name!r}; expected one of {', '.join(POLICY_NAMES)}"
    )

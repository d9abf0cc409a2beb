"""MIG profiles, their placement (start-slot) rules, and a repartition plan for idle GPUs.

A MIG-capable GPU has 8 memory slices and 7 compute slices. A profile ``Ng.Mgb`` takes N
compute slices and a contiguous run of memory slices that must begin at one of the start
slots NVIDIA allows for it (MIG user guide, "Supported MIG Profiles" tables for A100 40GB,
A100 80GB and H100 80GB). Placement here is first allowed start slot whose run is free,
so the same state always gives the same slice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MEMORY_SLICES = 8
COMPUTE_SLICES = 7


@dataclass(frozen=True)
class MigProfile:
    """One MIG profile: compute slices, memory slices used, memory and allowed starts."""

    name: str
    compute_slices: int
    memory_slices: int
    memory_gib: int
    starts: tuple[int, ...]


def _profiles(unit_gib: int) -> dict[str, MigProfile]:
    """The six profiles of a GPU whose one memory slice is ``unit_gib`` GiB."""
    rows = [
        (1, 1, (0, 1, 2, 3, 4, 5, 6)),
        (1, 2, (0, 2, 4, 6)),
        (2, 2, (0, 2, 4)),
        (3, 4, (0, 4)),
        (4, 4, (0,)),
        (7, 8, (0,)),
    ]
    out = {}
    for compute, memory, starts in rows:
        name = f"{compute}g.{memory * unit_gib}gb"
        out[name] = MigProfile(name, compute, memory, memory * unit_gib, starts)
    return out


MIG_PROFILES: dict[str, dict[str, MigProfile]] = {
    "A100-40GB": _profiles(5),
    "A100-80GB": _profiles(10),
    "H100-80GB": _profiles(10),
}
"""Profiles by GPU model name (the product name without vendor prefix)."""


def profiles_for(model: str) -> dict[str, MigProfile]:
    """Profiles of ``model``; empty when the model has no MIG."""
    return MIG_PROFILES.get(model, {})


@dataclass(frozen=True)
class MigSlice:
    """A placed MIG instance: its profile and first memory slice."""

    profile: str
    start: int


@dataclass
class MigGpu:
    """The MIG state of one GPU: which memory slices are taken, by which instance.

    ``layout`` is set when the GPU's instances are fixed (a driver that publishes a static
    MIG configuration): then only those instances can be used, whatever else would fit.
    """

    model: str
    used: list[MigSlice]
    layout: tuple[MigSlice, ...] = ()

    @property
    def compute_used(self) -> int:
        table = profiles_for(self.model)
        return sum(table[s.profile].compute_slices for s in self.used)

    def occupied(self) -> list[bool]:
        table = profiles_for(self.model)
        taken = [False] * MEMORY_SLICES
        for s in self.used:
            for i in range(s.start, s.start + table[s.profile].memory_slices):
                taken[i] = True
        return taken

    def find_start(self, profile: str) -> int | None:
        """First allowed start slot where ``profile`` fits now, or None."""
        if self.layout:
            free = [s.start for s in self.layout if s.profile == profile and s not in self.used]
            return min(free) if free else None
        spec = profiles_for(self.model).get(profile)
        if spec is None or self.compute_used + spec.compute_slices > COMPUTE_SLICES:
            return None
        taken = self.occupied()
        for start in spec.starts:
            end = start + spec.memory_slices
            if end <= MEMORY_SLICES and not any(taken[start:end]):
                return start
        return None

    def fits(self, placed: MigSlice) -> bool:
        """Whether ``placed`` could be created now (any allowed start, not only the first)."""
        if self.layout:
            return placed in self.layout and placed not in self.used
        spec = profiles_for(self.model).get(placed.profile)
        if spec is None or placed.start not in spec.starts:
            return False
        if self.compute_used + spec.compute_slices > COMPUTE_SLICES:
            return False
        return not any(self.occupied()[placed.start : placed.start + spec.memory_slices])

    def place(self, profile: str) -> MigSlice | None:
        start = self.find_start(profile)
        if start is None:
            return None
        placed = MigSlice(profile, start)
        self.used.append(placed)
        return placed

    def release(self, placed: MigSlice) -> None:
        self.used.remove(placed)


def repartition_plan(model: str, pending: Iterable[str]) -> list[MigSlice]:
    """A layout for an idle GPU that hosts as many of the ``pending`` profiles as fit.

    Larger profiles go first (they have the fewest start slots), each at its first free
    allowed start; profiles the model does not have are skipped. The result is the list of
    instances to create, which callers compare with the current layout before acting.
    """
    table = profiles_for(model)
    wanted: Sequence[str] = sorted(
        (p for p in pending if p in table),
        key=lambda p: (-table[p].memory_slices, -table[p].compute_slices, p),
    )
    gpu = MigGpu(model, [])
    for profile in wanted:
        gpu.place(profile)
    return list(gpu.used)

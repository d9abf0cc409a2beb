"""How the operator's console words a pod's placement (read from its annotation)."""

from __future__ import annotations

import pytest

from kapell.backends.kubernetes.inventory import Placement
from kapell.cli.console_cluster import describe_placement

PLACEMENTS = {
    '{"node":"n3","gpus":[2],"mig":["3g.40gb",4],"cpuMilli":100,"memoryMiB":128,"gpuCount":1,'
    '"gpuMilli":0,"migProfile":"3g.40gb","sharing":"time-slicing"}': "n3 GPU 2 MIG 3g.40gb (slice 4)",
    '{"node":"n1","gpus":[0],"mig":null,"cpuMilli":100,"memoryMiB":128,"gpuCount":1,'
    '"gpuMilli":250,"migProfile":null,"sharing":"mps"}': "n1 GPU 0 250/1000 mps",
    '{"node":"n2","gpus":[0,1],"mig":null,"cpuMilli":100,"memoryMiB":128,"gpuCount":2,'
    '"gpuMilli":1000,"migProfile":null,"sharing":"time-slicing"}': "n2 GPUs 0,1",
    '{"node":"n5","gpus":[],"mig":null,"cpuMilli":100,"memoryMiB":128,"gpuCount":0,'
    '"gpuMilli":0,"migProfile":null,"sharing":"time-slicing"}': "n5 (no GPU)",
}


@pytest.mark.parametrize(("annotation", "words"), PLACEMENTS.items())
def test_a_placement_in_words(annotation: str, words: str) -> None:
    assert describe_placement(Placement.from_json(annotation)) == words

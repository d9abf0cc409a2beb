"""A real Kubernetes control plane on this machine, with fake GPU nodes published through DRA.

``kapell dev cluster up`` and the e2e test fixture both use :class:`DevCluster`. The binaries
come from ``make k8s-bin`` (see ``hack/k8s``); this package only starts and feeds them.
"""

from kapell.devcluster.cluster import DEFAULT_STATE_DIR, DevCluster, UpResult, find_bin_dir
from kapell.devcluster.gpus import GPU_TYPES, GpuPool

__all__ = ["DEFAULT_STATE_DIR", "GPU_TYPES", "DevCluster", "GpuPool", "UpResult", "find_bin_dir"]

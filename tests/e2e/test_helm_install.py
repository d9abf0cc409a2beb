"""The Helm chart on a real apiserver: `helm install`ed as a user would, then
`kubectl auth can-i --as` each ServiceAccount: what its component does is allowed, the rest is
refused."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest
from tests.helmchart import BUILD_HINT, CHART, helm, helm_binary, render

from kapell.devcluster import DevCluster, find_bin_dir

Check = tuple[str, ...]  # kubectl auth can-i arguments

# What the operator does (docs/operator.md): NS is where Models live, HOME the release namespace.
OPERATOR_ALLOWED: list[Check] = [
    ("list", "pods", "-A"), ("watch", "pods", "-A"), ("create", "pods", "-n", "NS"),
    ("patch", "pods", "-n", "NS"), ("delete", "pods", "-n", "NS"),
    ("list", "resourceclaims.resource.k8s.io", "-A"),
    ("create", "resourceclaims.resource.k8s.io", "-n", "NS"),
    ("patch", "resourceclaims.resource.k8s.io", "-n", "NS"),
    ("list", "nodes"), ("watch", "resourceslices.resource.k8s.io"),
    ("watch", "models.kapell.dev", "-A"), ("patch", "models.kapell.dev", "-n", "NS"),
    ("patch", "models.kapell.dev", "--subresource=status", "-n", "NS"),
    ("create", "services", "-n", "NS"), ("delete", "services", "-n", "NS"),
    ("patch", "inferencepools.inference.networking.k8s.io", "-n", "NS"),
    ("delete", "inferenceobjectives.inference.networking.x-k8s.io", "-n", "NS"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io/models.kapell.dev"),
    ("create", "leases.coordination.k8s.io", "-n", "HOME"),
    ("update", "leases.coordination.k8s.io/kapell-operator", "-n", "HOME"),
    ("create", "events", "-n", "NS"),
    ("watch", "trainingjobs.kapell.dev", "-A"),
    ("patch", "trainingjobs.kapell.dev", "--subresource=status", "-n", "NS"),
    ("create", "resourceclaimtemplates.resource.k8s.io", "-n", "NS"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io/rayjobs.ray.io"),
    ("watch", "gpupools.kapell.dev", "-A"), ("get", "pods", "--subresource=log", "-n", "NS"),
]  # fmt: skip
OPERATOR_REFUSED: list[Check] = [
    ("get", "secrets", "-A"), ("list", "secrets", "-n", "HOME"), ("patch", "nodes"),
    ("delete", "namespaces"), ("delete", "nodes"), ("update", "models.kapell.dev", "-n", "NS"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io/rayservices.ray.io"),
    ("delete", "trainingjobs.kapell.dev", "-n", "NS"),
    ("update", "leases.coordination.k8s.io/kube-scheduler", "-n", "HOME"),
    ("create", "leases.coordination.k8s.io", "-n", "kube-system"),
    ("delete", "resourceslices.resource.k8s.io"), ("create", "deployments.apps", "-n", "NS"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"), ("create", "pods", "--subresource=exec", "-n", "NS"),
]  # fmt: skip
GATEWAY_ALLOWED: list[Check] = [  # it serves HOME's Models (the default)
    ("watch", "models.kapell.dev", "-n", "HOME"), ("list", "endpointslices.discovery.k8s.io", "-n", "HOME"),
    ("watch", "secrets", "-n", "HOME"),
]  # fmt: skip
GATEWAY_REFUSED: list[Check] = [
    ("create", "pods", "-n", "NS"), ("patch", "models.kapell.dev", "-n", "NS"),
    ("create", "secrets", "-n", "NS"), ("delete", "endpointslices.discovery.k8s.io", "-n", "NS"),
    ("list", "nodes"), ("watch", "secrets", "-A"), ("list", "models.kapell.dev", "-n", "NS"),
]  # fmt: skip
AGENT_ALLOWED: list[Check] = [
    ("patch", "nodes", "--subresource=status"), ("patch", "pods", "--subresource=status", "-n", "NS"), ("watch", "pods", "-A"),
    ("get", "secrets", "-n", "NS"), ("get", "resourceclaims.resource.k8s.io", "-n", "NS"),
    ("create", "leases.coordination.k8s.io", "-n", "kube-node-lease"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "NS"),
]  # fmt: skip
AGENT_REFUSED: list[Check] = [
    ("create", "pods", "-n", "NS"), ("delete", "nodes"), ("list", "secrets", "-A"),
    ("create", "leases.coordination.k8s.io", "-n", "HOME"), ("create", "serviceaccounts", "-n", "NS"),
]  # fmt: skip


@pytest.fixture
def installed(
    dev_cluster: DevCluster, kubectl: Callable[..., str], namespace: str
) -> Iterator[str]:
    """`helm install` of release NAMESPACE into NAMESPACE (its CRDs too, unless the cluster has
    them already); `helm uninstall` afterwards."""
    if not helm_binary().is_file():
        pytest.fail(f"no helm at {helm_binary()}: {BUILD_HINT}")
    options = ("--namespace", namespace, "--set", "nodeAgent.rbac.create=true")
    kube = f"--kubeconfig={dev_cluster.kubeconfig}"
    helm("install", namespace, str(CHART), kube, *options)
    objects = render(namespace, namespace, *options[2:])
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    names = kubectl("get", "-f", "-", "-o", "name", stdin=body)
    assert len(names.split()) == len(objects)  # every object the chart renders is there
    yield namespace
    helm("uninstall", namespace, kube, "--namespace", namespace, "--wait", "--timeout=90s")


def _can(dev_cluster: DevCluster, account: str, check: Check, home: str, ns: str) -> bool:
    args = [home if a == "HOME" else ns if a == "NS" else a for a in check]
    done = subprocess.run(
        [str(find_bin_dir() / "kubectl"), f"--kubeconfig={dev_cluster.kubeconfig}", "auth",
         "can-i", *args, f"--as=system:serviceaccount:{home}:{account}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {args}: {done.stdout} {done.stderr}"
    return answer == "yes"


def test_the_gateway_may_watch_tenants(kubectl: Callable[..., str], installed: str) -> None:
    """Asked by a SubjectAccessReview: `kubectl auth can-i` cannot name a resource whose CRD is
    not installed (it drops the group), and the Tenant kind may not be."""

    def allowed(verb: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": f"system:serviceaccount:{installed}:{installed}-gateway",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{installed}"],
                "resourceAttributes": {
                    "verb": verb,
                    "group": "kapell.dev",
                    "resource": "tenants",
                    "namespace": installed,
                },
            },
        }
        out = kubectl(
            "create", "-f", "-", "-o", "jsonpath={.status.allowed}", stdin=json.dumps(review)
        )
        return out == "true"  # omitted when false

    assert allowed("watch") and allowed("list")
    assert not allowed("delete") and not allowed("create")


@pytest.mark.parametrize(
    ("component", "allowed", "refused"),
    [
        ("operator", OPERATOR_ALLOWED, OPERATOR_REFUSED),
        ("gateway", GATEWAY_ALLOWED, GATEWAY_REFUSED),
        ("node-agent", AGENT_ALLOWED, AGENT_REFUSED),
    ],
)
def test_each_service_account_can_do_its_job_and_nothing_it_should_not(
    dev_cluster: DevCluster,
    installed: str,
    component: str,
    allowed: list[Check],
    refused: list[Check],
) -> None:
    account, models_ns = f"{installed}-{component}", "team-a"
    wrong = [c for c in allowed if not _can(dev_cluster, account, c, installed, models_ns)]
    wrong += [c for c in refused if _can(dev_cluster, account, c, installed, models_ns)]
    assert not wrong, f"{account}: can-i answered wrongly for {wrong}"

"""The Helm chart, linted and rendered by a real helm: valid objects, the operator's and the
gateway's command lines as their containers expect them, least-privilege RBAC, optional parts."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from tests.helmchart import BUILD_HINT, CHART, helm, helm_binary, render

K8S_VERSION = "1.34.0"  # the newest schema kubernetes-validate ships that the chart targets
OPTIONAL = (
    "--set", "serviceMonitor.enabled=true", "--set", "nodeAgent.rbac.create=true",
    "--set", "prometheusRule.enabled=true",
    "--set", "operator.watchNamespace=team-a",
)  # fmt: skip

pytestmark = pytest.mark.skipif(
    not helm_binary().is_file(), reason=f"no helm at {helm_binary()}: {BUILD_HINT}"
)


def _kinds(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def _rules(objects: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    [found] = [
        o for o in objects if o["kind"] in ("Role", "ClusterRole") and o["metadata"]["name"] == role
    ]
    rules: list[dict[str, Any]] = found["rules"]
    return rules


@pytest.mark.parametrize("options", [(), OPTIONAL], ids=["defaults", "every-option"])
def test_the_chart_lints_strictly(options: tuple[str, ...]) -> None:
    out = helm("lint", "--strict", str(CHART), *options)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_the_rendered_objects_are_valid_kubernetes() -> None:
    objects = render("kapell", "kapell-system", *OPTIONAL)
    builtin = [o for o in objects if o["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    for obj in builtin:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "Role", "RoleBinding", "PodDisruptionBudget", "ServiceMonitor",
                     "PrometheusRule"}  # fmt: skip
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    shipped = YAML(typ="safe").load(CHART.joinpath("files/kapell-drift-rules.yaml").read_text())
    assert rule["spec"] == shipped


def test_the_containers_get_the_command_lines_of_the_contract() -> None:
    objects = _kinds(render("prod", "ops"))
    operator = objects[("Deployment", "prod-operator")]["spec"]["template"]["spec"]
    [container] = operator["containers"]
    assert container["image"] == "ghcr.io/kapell-dev/kapell:0.1.0"
    assert container["args"] == [
        "operator", "--all-namespaces", "--host=0.0.0.0", "--port=8090", "--identity=$(POD_NAME)",
        "--lease-namespace=$(POD_NAMESPACE)", "--lease-duration=15",
    ]  # fmt: skip
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the leader only
    assert operator["serviceAccountName"] == "prod-operator"
    service = objects[("Service", "prod-operator")]["spec"]
    assert service["ports"][0]["port"] == 8090
    gateway = objects[("Deployment", "prod-gateway")]["spec"]["template"]["spec"]
    [container] = gateway["containers"]
    assert container["args"] == [
        "gateway", "--namespace=ops", "--host=0.0.0.0", "--port=8000", "--identity=$(POD_NAME)",
        "--operator-service=ops/prod-operator",
    ]  # fmt: skip
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_operators_rbac_is_least_privilege() -> None:
    objects = render("kapell", "kapell-system")
    for obj in objects:
        for rule in obj.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], obj
    granted = {
        (group, resource)
        for role in ("kapell-operator-cluster", "kapell-operator-models", "kapell-operator-lease")
        for rule in _rules(objects, role)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert ("", "secrets") not in granted and ("", "namespaces") not in granted
    assert ("kapell.dev", "models/status") in granted and ("", "pods") in granted
    [lease] = _rules(objects, "kapell-operator-lease")[1:]
    assert lease["resourceNames"] == ["kapell-operator"]
    kinds = _kinds(objects)
    assert kinds[("Role", "kapell-operator-lease")]["metadata"]["namespace"] == "kapell-system"
    assert ("ClusterRoleBinding", "kapell-operator-models") in kinds


def test_a_namespaced_install_binds_the_write_rules_in_that_namespace_only() -> None:
    kinds = _kinds(render("kapell", "kapell-system", "--set", "operator.watchNamespace=team-a"))
    assert ("ClusterRoleBinding", "kapell-operator-models") not in kinds
    binding = kinds[("RoleBinding", "kapell-operator-models")]
    assert binding["metadata"]["namespace"] == "team-a"
    operator = kinds[("Deployment", "kapell-operator")]["spec"]["template"]["spec"]
    assert "--namespace=team-a" in operator["containers"][0]["args"]
    # The gateway serves that namespace, and reads only the operator's EndpointSlices at home.
    gateway = kinds[("Deployment", "kapell-gateway")]["spec"]["template"]["spec"]
    assert "--namespace=team-a" in gateway["containers"][0]["args"]
    assert kinds[("Role", "kapell-gateway")]["metadata"]["namespace"] == "team-a"
    [home] = kinds[("Role", "kapell-gateway-operator-endpoints")]["rules"]
    assert home["resources"] == ["endpointslices"]
    assert not [
        o
        for o in kinds.values()
        if o["kind"].startswith("Cluster") and "gateway" in o["metadata"]["name"]
    ]


def test_optional_parts_are_off_by_default_and_the_crds_ship_with_the_chart() -> None:
    kinds = {o["kind"] for o in render("kapell", "kapell-system")}
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds
    assert "PodDisruptionBudget" in kinds
    no_gateway = render("kapell", "kapell-system", "--set", "gateway.enabled=false")
    assert not [o for o in no_gateway if "gateway" in o["metadata"]["name"]]
    crds = [
        o
        for o in render("kapell", "kapell-system", "--include-crds")
        if o["kind"] == "CustomResourceDefinition"
    ]
    assert "models.kapell.dev" in {c["metadata"]["name"] for c in crds}

"""The operator's informer against the real apiserver: a watch too old to resume relists."""

from __future__ import annotations

import threading
from typing import Any

from kubeobjects import eventually
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from kapell.backends.kubernetes.informer import Informer, Key
from kapell.devcluster import DevCluster


def _data(raw: dict[str, Any]) -> str:
    return str((raw.get("data") or {}).get("v", ""))


def test_a_watch_from_an_expired_version_gets_410_and_relists(
    kube: Client, namespace: str, dev_cluster: DevCluster
) -> None:
    def config_map(name: str, value: str) -> ConfigMap:
        return ConfigMap(metadata=ObjectMeta(name=name, namespace=namespace), data={"v": value})

    made = [kube.create(config_map(f"c{i}", "old")) for i in range(3)]
    old_version = made[0].metadata.resourceVersion if made[0].metadata else None
    for i in range(3):
        kube.patch(ConfigMap, f"c{i}", {"data": {"v": str(i)}}, namespace=namespace)
    dev_cluster.compact_etcd()  # ConfigMaps bypass the watch cache in the dev cluster
    seen: dict[Key, str | None] = {}
    lock = threading.Lock()

    def on_change(key: Key, value: str | None) -> None:
        with lock:
            seen[key] = value

    informer = Informer(kube, ConfigMap, _data, on_change, namespace=namespace)
    informer._version = old_version  # compacted away: the apiserver answers 410 Gone
    informer.start()
    try:
        eventually(lambda: True if informer.synced.is_set() else None, "relist after 410")
        assert informer.relists == 1
        ours = {k[1]: v for k, v in seen.items() if k[1].startswith("c")}
        assert ours == {"c0": "0", "c1": "1", "c2": "2"}
        kube.delete(ConfigMap, "c1", namespace=namespace)
        kube.create(config_map("c3", "3"))
        eventually(lambda: True if (namespace, "c3") in seen else None, "watch after relist")
        eventually(lambda: True if seen.get((namespace, "c1"), "x") is None else None, "deletion")
        values = [informer.get((namespace, f"c{i}")) for i in range(4)]
        assert sorted(v for v in values if v) == ["0", "2", "3"]
        assert informer.relists == 1, "a resumed watch must not list again"
    finally:
        informer.stop()


def test_the_index_follows_each_object_as_it_changes_group_and_is_deleted(
    kube: Client, namespace: str, dev_cluster: DevCluster
) -> None:
    """The operator reads a Model's pods through the index: it must never keep a stale member."""
    for i, group in enumerate(["a", "a", "b"]):
        kube.create(
            ConfigMap(metadata=ObjectMeta(name=f"i{i}", namespace=namespace), data={"v": group})
        )
    informer = Informer(
        kube, ConfigMap, _data, lambda key, value: None, namespace=namespace, index=lambda v: v
    )
    informer.start()
    try:
        eventually(lambda: True if informer.synced.is_set() else None, "first list")
        assert sorted(informer.indexed("a")) == ["a", "a"] and informer.indexed("b") == ["b"]
        kube.patch(ConfigMap, "i0", {"data": {"v": "b"}}, namespace=namespace)
        eventually(lambda: True if len(informer.indexed("b")) == 2 else None, "moved to b")
        assert informer.indexed("a") == ["a"]
        kube.delete(ConfigMap, "i1", namespace=namespace)
        eventually(lambda: True if not informer.indexed("a") else None, "deleted from a")
        assert informer.indexed("b") == ["b", "b"] and informer.indexed("missing") == []
    finally:
        informer.stop()

"""Pod network addressing: node CIDRs, address picking, names, and the machine-wide CIDR lock."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kapell.api.errors import BackendError
from kapell.devcluster import podnet

IP = ipaddress.IPv4Address


def test_node_cidrs_are_the_24s_of_the_pod_network_none_loopback() -> None:
    cidrs = podnet.node_cidrs()
    assert len(cidrs) == 256
    assert cidrs[0] == ipaddress.IPv4Network("10.244.0.0/24")
    assert cidrs[255] == ipaddress.IPv4Network("10.244.255.0/24")
    assert all(c.subnet_of(podnet.POD_NETWORK) and not c.is_loopback for c in cidrs)
    assert podnet.gateway(cidrs[3]) == IP("10.244.3.1")


def test_pick_ip_goes_round_past_the_last_and_skips_used_and_gateway() -> None:
    cidr = ipaddress.IPv4Network("10.244.7.0/24")
    assert podnet.pick_ip(cidr, set()) == IP("10.244.7.2")
    assert podnet.pick_ip(cidr, {IP("10.244.7.2")}) == IP("10.244.7.3")
    # a freed address is not reused at once: the search continues after the last one given
    assert podnet.pick_ip(cidr, set(), last=IP("10.244.7.9")) == IP("10.244.7.10")
    assert podnet.pick_ip(cidr, set(), last=IP("10.244.7.254")) == IP("10.244.7.2")


def test_pick_ip_fails_when_the_node_is_full() -> None:
    cidr = ipaddress.IPv4Network("10.244.7.0/24")
    everything = {ip for ip in cidr.hosts() if ip != podnet.gateway(cidr)}
    assert len(everything) == 253
    with pytest.raises(BackendError, match="no free pod address"):
        podnet.pick_ip(cidr, everything)


def test_names_derive_from_the_uid_and_fit_interface_limits() -> None:
    uid = "ea97e36d-2320-4310-a5cf-f2ab55109f70"
    assert podnet.netns_name(uid) == f"kapell-{uid}"
    assert podnet.veth_name(uid) == "kpea97e36d23204"
    assert len(podnet.veth_name(uid)) <= 15


def test_a_cidr_held_by_one_lock_is_not_given_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podnet, "LOCK_DIR", tmp_path)
    first = podnet.lock_free_cidr("cluster-a")
    second = podnet.lock_free_cidr("cluster-b")
    assert (str(first.cidr), str(second.cidr)) == ("10.244.0.0/24", "10.244.1.0/24")
    assert podnet.lock_cidr(first.cidr, "cluster-c") is None
    assert (tmp_path / "10.244.0.0-24.lock").read_text() == "cluster-a\n"
    first.release()  # what the kernel does when the holder dies
    again = podnet.lock_cidr(first.cidr, "cluster-c")
    assert again is not None
    again.release()
    second.release()

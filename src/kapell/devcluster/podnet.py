"""Pod networking on serving nodes, the way a point-to-point CNI plugin does it.

Every pod gets a network namespace named after its uid, with loopback up and one end of a veth
pair as ``eth0``. Its address is a /32 from its node's /24 inside ``POD_NETWORK``; the node's
first address is the gateway, held by the host end of every veth of that node (so the pod's
default route leads to the host), and the host has a /32 route to the pod through the veth. The
addresses exist only on this machine: the node's whole /24 has an ``unreachable`` route on the
host, so an address without a pod fails at once instead of following the default route off the
machine. Pods reach each other through the host: forwarding is switched on for each pod's veth
(packets arriving from a pod), never machine-wide.

Network namespaces, links and routes are machine-wide, while several dev clusters may run on one
machine at a time. Node CIDRs are therefore claimed with a lock file under ``/run`` that the
agent holds open for as long as it runs (the kernel drops the lock when the agent dies, however
it dies), and names derive from pod uids, which are unique.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from kapell.api.errors import BackendError

POD_NETWORK = ipaddress.IPv4Network("10.244.0.0/16")
NODE_PREFIX = 24
LOCK_DIR = Path("/run/kapell-devcluster/pod-cidrs")
NETNS_PREFIX = "kapell-"


def node_cidrs() -> list[ipaddress.IPv4Network]:
    """Every node CIDR the pod network holds, in order (``10.244.0.0/24`` ...)."""
    return list(POD_NETWORK.subnets(new_prefix=NODE_PREFIX))


def gateway(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The node's own address in its CIDR: the first host address."""
    return cidr.network_address + 1


def pick_ip(
    cidr: ipaddress.IPv4Network,
    used: Collection[ipaddress.IPv4Address],
    last: ipaddress.IPv4Address | None = None,
) -> ipaddress.IPv4Address:
    """The next free pod address after ``last``, wrapping round, so a freed address is reused
    as late as possible (a client still holding a deleted pod's IP does not reach a new pod)."""
    candidates = [ip for ip in cidr.hosts() if ip != gateway(cidr)]
    start = candidates.index(last) + 1 if last in candidates else 0
    for ip in candidates[start:] + candidates[:start]:
        if ip not in used:
            return ip
    raise BackendError(f"no free pod address left in {cidr}")


def netns_name(uid: str) -> str:
    return f"{NETNS_PREFIX}{uid}"


def veth_name(uid: str) -> str:
    """The host end of a pod's veth: ``kp`` and 13 hex digits of the uid (15 is the limit)."""
    return "kp" + uid.replace("-", "")[:13]


@dataclass
class CidrLock:
    """A node CIDR held by this process through an open, locked file."""

    cidr: ipaddress.IPv4Network
    fd: int

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def lock_cidr(cidr: ipaddress.IPv4Network, owner: str) -> CidrLock | None:
    """Claim ``cidr`` for this process, or None if another live process holds it."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    path = LOCK_DIR / f"{cidr.network_address}-{cidr.prefixlen}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{owner}\n".encode())
    return CidrLock(cidr, fd)


def lock_free_cidr(owner: str) -> CidrLock:
    for cidr in node_cidrs():
        lock = lock_cidr(cidr, owner)
        if lock is not None:
            return lock
    raise BackendError(f"every node CIDR of {POD_NETWORK} is held by a running agent")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise BackendError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def clear_routes(cidr: ipaddress.IPv4Network) -> list[str]:
    """Delete host routes into ``cidr`` (left by an agent that died holding it); their targets."""
    routes = json.loads(_ip("-j", "route", "show").stdout or "[]")
    stale = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default" and ipaddress.IPv4Network(dst, strict=False).subnet_of(cidr):
            _ip("route", "del", route.get("type", "unicast"), dst, check=False)
            stale.append(dst)
    return stale


def fence(cidr: ipaddress.IPv4Network) -> None:
    """Make ``cidr`` unreachable from the host except through the pods' own /32 routes."""
    _ip("route", "replace", "unreachable", str(cidr))


def unfence(cidr: ipaddress.IPv4Network) -> None:
    _ip("route", "del", "unreachable", str(cidr), check=False)


def create(uid: str, ip: ipaddress.IPv4Address, gw: ipaddress.IPv4Address) -> tuple[str, str]:
    """Make the pod's namespace and veth; returns (namespace name, host veth name).

    Idempotent for a uid: what a crashed earlier attempt left is removed first.
    """
    netns, veth = netns_name(uid), veth_name(uid)
    delete(netns, veth)
    try:
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{gw}/32", "dev", veth)
        _ip("link", "set", veth, "up")
        inside = ("netns", "exec", netns, "ip")
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{ip}/32", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "route", "add", f"{gw}/32", "dev", "eth0", "scope", "link")
        _ip(*inside, "route", "add", "default", "via", str(gw), "dev", "eth0")
        _ip("route", "replace", f"{ip}/32", "dev", veth, "scope", "link", "src", str(gw))
        # Pod to pod goes through the host: forward what arrives from a pod's veth (this
        # interface only; the machine's own forwarding setting is left as it is).
        Path(f"/proc/sys/net/ipv4/conf/{veth}/forwarding").write_text("1\n")
    except BaseException:
        delete(netns, veth)
        raise
    return netns, veth


def delete(netns: str, veth: str) -> None:
    """Remove a pod's veth (its route goes with it) and namespace; missing ones are fine."""
    _ip("link", "del", veth, check=False)
    _ip("netns", "del", netns, check=False)


def exists(netns: str) -> bool:
    return (Path("/run/netns") / netns).exists()


def pids_in(netns: str) -> list[int]:
    """Processes running inside a namespace."""
    done = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def can_manage() -> str | None:
    """Why this process cannot make pod networks, or None if it can."""
    if os.geteuid() != 0:
        return "serving nodes need root (network namespaces, veth pairs, routes)"
    if shutil.which("ip") is None:
        return "serving nodes need iproute2's `ip` on PATH"
    return None


def add_local_address(ip: str) -> None:
    """Make ``ip`` one of this host's own addresses (on ``lo``), so pods can reach it."""
    _ip("addr", "replace", f"{ip}/32", "dev", "lo")


def remove_local_address_if_unused(ip: str) -> None:
    """Remove ``ip`` from ``lo`` unless a socket still listens on it (another dev cluster)."""
    if not _listening_on(ipaddress.IPv4Address(ip)):
        _ip("addr", "del", f"{ip}/32", "dev", "lo", check=False)


def _listening_on(ip: ipaddress.IPv4Address) -> bool:
    """Whether a TCP socket listens on ``ip`` (``/proc/net/tcp``: little-endian hex, state 0A)."""
    wanted = ip.packed[::-1].hex().upper()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.split(":")[0] == wanted:
                return True
    return False

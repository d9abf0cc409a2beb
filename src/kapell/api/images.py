"""kapell's container image, by name, so the operator, the Helm chart and the dev cluster agree.

One image holds all of kapell: the operator, the gateway and the engines it ships
(``python -m kapell.engines.sim`` ...); its entrypoint is ``kapell`` (the ``Containerfile``). On the dev cluster's
serving nodes it is the only image that runs: there it stands for this machine's own Python
environment, so its tag is not checked.
"""

from __future__ import annotations

KAPELL_REPOSITORY = "ghcr.io/kapell-dev/kapell"
KAPELL_TAG = "0.1.0"
KAPELL_IMAGE = f"{KAPELL_REPOSITORY}:{KAPELL_TAG}"


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without its tag or digest."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def is_kapell_image(image: str) -> bool:
    """Whether ``image`` is kapell's image, at any tag or digest."""
    return image_repository(image) == KAPELL_REPOSITORY

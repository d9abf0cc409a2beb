"""Container images kapell knows by name, so the operator and the dev cluster agree on them.

``ENGINE_IMAGE`` holds kapell's engines (``python -m kapell.engines.sim`` ...). On the dev
cluster's serving nodes it is the only image that runs: there it stands for this machine's own
Python environment, so its tag is not checked.
"""

from __future__ import annotations

ENGINE_REPOSITORY = "ghcr.io/kapell-dev/kapell-engine"
ENGINE_TAG = "0.1.0"
ENGINE_IMAGE = f"{ENGINE_REPOSITORY}:{ENGINE_TAG}"


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without its tag or digest."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def is_engine_image(image: str) -> bool:
    """Whether ``image`` is kapell's engine image, at any tag or digest."""
    return image_repository(image) == ENGINE_REPOSITORY

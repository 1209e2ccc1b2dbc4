"""Copies images from one Docker Engine to another through their APIs (save, then load).

An engine without a registry (a second engine, a remote machine) would otherwise build every
image itself, mmdebstrap and all (minutes per image); a copy is one stream of the image's
layers (seconds). The tags are content-addressed (harness.lab.images), so a tag copied is
exactly the image a build on the target would have made, and the harness's ImageBuilder on the
target finds it and builds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import docker
import docker.errors

from harness.lab.images import ImageBuildError

# Read and written in pieces: an image is hundreds of megabytes and is never held whole.
CHUNK_BYTES = 1 << 20


def _counted(chunks: Iterator[bytes], counter: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        counter[0] += len(chunk)
        yield chunk


def copy_image(source: docker.DockerClient, target: docker.DockerClient, tag: str,
               report: Callable[[str], None] = lambda _line: None) -> bool:
    """Copy `tag` from source to target unless the target has it; True when copied."""
    try:
        target.images.get(tag)
        report(f"{tag}: already there")
        return False
    except docker.errors.ImageNotFound:
        pass
    try:
        size = source.images.get(tag).attrs["Size"]
    except docker.errors.ImageNotFound as exc:
        raise ImageBuildError(f"{tag}: not on the source engine, nothing to copy") from exc
    started = time.monotonic()
    report(f"{tag}: copying {size / 1e6:.0f} MB")
    sent = [0]
    try:
        # docker save's tar names the tag, so load tags the image the same.
        stream = source.api.get_image(tag, chunk_size=CHUNK_BYTES)
        for line in target.api.load_image(_counted(stream, sent), quiet=True):
            if "error" in line:
                raise ImageBuildError(f"{tag}: the target engine refused it: {line['error']}")
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"{tag}: copy failed: {exc.explanation}") from exc
    try:
        target.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise ImageBuildError(f"{tag}: the target engine loaded the stream but has no such "
                              "tag afterwards") from exc
    report(f"{tag}: copied {sent[0] / 1e6:.0f} MB in {time.monotonic() - started:.1f}s")
    return True

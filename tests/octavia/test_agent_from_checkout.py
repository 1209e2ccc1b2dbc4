"""The agent developer's loop: an Octavia source checkout (here Octavia 19.0.0's sdist, unpacked)
with one line of its amphora-agent changed becomes the amphora image (--agent octavia
--octavia-source DIR), the lab boots it, and the change answers on the wire: GET /1.0/info's
`hostname` carries a new prefix each run.

Each run writes a new value, so each run builds a new image from the checkout (the base and
dependency stages are cached); the image is removed afterwards.
"""

from __future__ import annotations

import secrets
import tarfile
from pathlib import Path

import docker
import pytest

from harness.lab.lab import Lab
from harness.lab.octavia_image import image_cache_dir, pypi_release_file
from harness.lab.providers import make_provider
from harness.octavia_source import DEFAULT_OCTAVIA_VERSION, SourceKind, parse_octavia_source

AMPHORA_INFO = Path("octavia/amphorae/backends/agent/api_server/amphora_info.py")
# The hostname of GET /1.0/info: the first of the module's two such lines (compile_amphora_info;
# the second is /details's).
HOSTNAME_LINE = "        body = {'hostname': socket.gethostname(),"


@pytest.fixture(scope="module")
def checkout() -> Path:
    """Octavia's sdist from PyPI, unpacked once next to the image build's cache."""
    home = image_cache_dir() / "agent-checkout-test"
    tree = home / f"octavia-{DEFAULT_OCTAVIA_VERSION}"
    pristine = tree / f"{AMPHORA_INFO}.orig"
    if not pristine.is_file():
        sdist = pypi_release_file(DEFAULT_OCTAVIA_VERSION, "sdist")
        assert sdist is not None, f"PyPI has no octavia {DEFAULT_OCTAVIA_VERSION} sdist"
        home.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as archive:
            archive.extractall(home, filter="data")
        pristine.write_text((tree / AMPHORA_INFO).read_text())
    return tree


@pytest.mark.timeout(1800)
def test_a_line_changed_in_the_agent_of_a_checkout_answers_on_the_wire(
        checkout: Path, tmp_path: Path) -> None:
    prefix = f"checkout-{secrets.token_hex(4)}-"
    text = (checkout / f"{AMPHORA_INFO}.orig").read_text()
    assert text.count(HOSTNAME_LINE) == 2
    (checkout / AMPHORA_INFO).write_text(text.replace(
        HOSTNAME_LINE, f"        body = {{'hostname': {prefix!r} + socket.gethostname(),", 1))
    source = parse_octavia_source(str(checkout))
    assert source.kind is SourceKind.CHECKOUT

    provider = make_provider("docker")
    image = provider.ensure_octavia_image(source)
    try:
        assert image.split(":")[1].startswith(source.content_id() + "-")
        with Lab(provider, agent="octavia", octavia_source=source,
                 results_dir=tmp_path) as lab:
            amphora = lab.add_amphora()
            info = amphora.client.get_info()
        assert info["hostname"] == f"{prefix}{amphora.node.spec.hostname}"
        assert "uuid" not in info  # Octavia's /info, not ours (ours adds the amphora id)
    finally:
        docker.from_env().images.remove(image, force=True)

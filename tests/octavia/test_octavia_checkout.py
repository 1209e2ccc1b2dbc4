"""The driver developer's loop: an Octavia source checkout (here Octavia 19.0.0's sdist, unpacked)
with one line of a haproxy template changed is installed editable into a virtualenv of its own
(--octavia-source DIR, harness.drivers.octavia_venv), and the changed line is in the haproxy.cfg
our agent receives from Octavia's driver, and haproxy runs it.

The checkout and its virtualenv are kept between runs (installing Octavia's dependencies takes
minutes the first time); each run writes a new value into the line, so the test shows that an
edit reaches the agent without reinstalling.
"""

from __future__ import annotations

import random
import re
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from harness.drivers.octavia_driver import OctaviaLoadBalancerDriver, amphora_limits
from harness.drivers.octavia_process import OctaviaProbe
from harness.drivers.octavia_venv import ensure_octavia_python, venv_dir
from harness.model.loadbalancer import Listener, ListenerProtocol, LoadBalancer, Member, Pool
from harness.octavia_source import DEFAULT_OCTAVIA_VERSION, SourceKind, parse_octavia_source

TEMPLATE = Path("octavia/common/jinja/haproxy/combined_listeners/templates/base.j2")
# The line changed: the defaults section's connection retries (Octavia renders 3).
RETRIES_LINE = re.compile(r"^    retries \d+$", re.M)
DOWNLOAD_TIMEOUT_S = 600
LISTENER_PORT = 8080


@pytest.fixture(scope="module")
def checkout() -> Path:
    """Octavia's sdist from PyPI, unpacked once next to the driver's virtualenvs."""
    home = venv_dir(parse_octavia_source(None)).parent / ".octavia-checkout-test"
    tree = home / f"octavia-{DEFAULT_OCTAVIA_VERSION}"
    if not (tree / TEMPLATE).is_file():
        home.mkdir(parents=True, exist_ok=True)
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-binary", ":all:", "--no-deps", f"octavia=={DEFAULT_OCTAVIA_VERSION}",
             "-d", str(home)], capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S,
            check=False)
        if download.returncode != 0:
            pytest.skip(f"Octavia's sdist could not be downloaded: {download.stderr[-500:]}")
        with tarfile.open(home / f"octavia-{DEFAULT_OCTAVIA_VERSION}.tar.gz") as sdist:
            sdist.extractall(home, filter="data")
    return tree


@pytest.mark.timeout(1800)
def test_a_template_line_changed_in_a_checkout_reaches_the_agent(
        checkout, agent_factory, pki, http_backend, vip_address):
    retries = random.randint(4, 9)
    template = checkout / TEMPLATE
    text = template.read_text()
    assert len(RETRIES_LINE.findall(text)) == 1
    template.write_text(RETRIES_LINE.sub(f"    retries {retries}", text))

    source = parse_octavia_source(str(checkout))
    assert source.kind is SourceKind.CHECKOUT
    python = ensure_octavia_python(source)
    imported = subprocess.run([str(python), "-c", "import octavia; print(octavia.__file__)"],
                              capture_output=True, text=True, check=True).stdout
    assert imported.startswith(str(checkout)), imported  # editable: the checkout itself

    agent = agent_factory(topology="SINGLE")
    pool = Pool(members=[Member(address="127.0.0.1", port=http_backend.port)])
    lb = LoadBalancer(vip_address=vip_address, listeners=[Listener(
        protocol=ListenerProtocol.HTTP, port=LISTENER_PORT, pools=[pool],
        default_pool_id=pool.id)])
    limits = amphora_limits(resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                            agent.client.get_details())
    with OctaviaProbe(python) as probe:
        driver = OctaviaLoadBalancerDriver(probe, lb, [agent.client], pki.driver,
                                           paths=agent.amphora_paths(), limits=limits)
        driver.create()
        config = agent.client.get_config(lb.id).body
        assert RETRIES_LINE.findall(config) == [f"    retries {retries}"]
        with requests.Session() as session:
            session.trust_env = False
            assert session.get(f"http://{vip_address}:{LISTENER_PORT}/", timeout=5).ok
        driver.delete()
        driver.close()

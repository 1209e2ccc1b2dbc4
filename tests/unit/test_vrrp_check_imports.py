"""keepalived runs the agent's check script every few seconds with a timeout; on a loaded machine
an import of the web framework alone took longer than that, the check timed out and the VIP was
given up. The check must not import flask (or anything of the API side)."""

import subprocess
import sys


def test_the_vrrp_check_imports_no_web_framework():
    shown = subprocess.run(
        [sys.executable, "-c",
         "import sys, amphora_agent.vrrp_check; "
         "print(sorted(m for m in ('flask', 'werkzeug') if m in sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60)
    assert shown.stdout.strip() == "[]"

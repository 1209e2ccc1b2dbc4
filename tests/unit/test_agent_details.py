"""The /info and /details figures Octavia's agent computes in a way of its own: the TuneD
profile file and dpkg's Version field (amphora_agent/details.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from amphora_agent.details import active_tuned_profiles, dpkg_version


def test_tuned_profile_is_the_file_stripped_and_bounded(tmp_path: Path):
    profile = tmp_path / "active_profile"
    profile.write_text("virtual-guest amphora\n")
    assert active_tuned_profiles(profile) == "virtual-guest amphora"
    profile.write_text("  " + "x" * 2000)
    assert active_tuned_profiles(profile) == "x" * 1022  # the first 1024 characters


def test_no_tuned_is_empty(tmp_path: Path):
    assert active_tuned_profiles(tmp_path / "absent") == ""
    assert active_tuned_profiles(tmp_path) == ""  # unreadable (a directory)


def test_dpkg_version_is_dpkgs_field_as_is():
    expected = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "haproxy"],
                              capture_output=True, text=True, check=True).stdout
    assert expected and dpkg_version("haproxy") == expected
    # A package dpkg never heard of: Octavia's agent fails (500); ours says "".
    assert dpkg_version("amphora-harness-no-such-package") == ""

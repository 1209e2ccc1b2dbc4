"""Health monitors through the VIP: a member that stops answering its monitor is taken out and
traffic avoids it; when it answers again it is put back."""

from __future__ import annotations

from harness.lab import Lab, Member


def test_an_unresponsive_member_is_taken_out_and_comes_back(load, deploy, lab: Lab,
                                                           members: list[Member], vip_url,
                                                           until):
    deploy(load("health"))
    url = vip_url(80)
    until(url, lambda a: set(a) == {"m1", "m2", "m3"})

    frozen = members[1]  # m2
    lab.provider.pause(frozen.node)
    try:
        until(url, lambda a: set(a) == {"m1", "m3"}, count=20)
    finally:
        lab.provider.unpause(frozen.node)

    until(url, lambda a: set(a) == {"m1", "m2", "m3"})

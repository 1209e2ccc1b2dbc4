"""Where a lab runs: docker (default) or netns."""

from __future__ import annotations

from harness.lab.providers.base import LabOwnership, Provider, ProviderError

PROVIDERS = ("docker", "netns")


def make_provider(name: str) -> Provider:
    """The provider called name, connected and ready; ProviderError if it cannot be."""
    if name == "docker":
        from harness.lab.providers.docker import DockerProvider

        return DockerProvider()
    if name == "netns":
        from harness.lab.providers.netns import NetnsProvider

        return NetnsProvider()
    raise ProviderError(f"the {name} provider is not implemented yet")


def labs_on_host(current: Provider) -> list[LabOwnership]:
    """The labs of every provider that answers on this host, current's first: what the host
    holds for labs (link-fault tables) may belong to a lab of any of them."""
    labs = list(current.labs())
    for name in PROVIDERS:
        if name == current.name:
            continue
        try:
            labs += make_provider(name).labs()
        except ProviderError:
            continue  # that provider cannot run here, so it has no labs here
    return labs

"""Where a lab runs: docker (default) or netns."""

from __future__ import annotations

from harness.providers.base import Provider, ProviderError

PROVIDERS = ("docker", "netns")


def make_provider(name: str) -> Provider:
    """The provider called name, connected and ready; ProviderError if it cannot be."""
    if name == "docker":
        from harness.providers.docker import DockerProvider

        return DockerProvider()
    if name == "netns":
        from harness.providers.netns import NetnsProvider

        return NetnsProvider()
    raise ProviderError(f"the {name} provider is not implemented yet")

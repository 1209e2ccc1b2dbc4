"""Where a lab runs: docker (default) or netns."""

from __future__ import annotations

from harness.lab.providers.base import LabOwnership, Provider, ProviderError

PROVIDERS = ("docker", "netns")


def make_provider(name: str, docker_host: str | None = None) -> Provider:
    """The provider called name, connected and ready; ProviderError if it cannot be.
    docker_host: the Docker Engine's URL (DOCKER_HOST syntax; None: the environment's)."""
    if name == "docker":
        from harness.lab.providers.docker import DockerProvider

        return DockerProvider(docker_host=docker_host)
    if docker_host is not None:
        raise ProviderError(f"a Docker Engine ({docker_host}) was named, but the {name} provider "
                            "runs labs on this host without one")
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

"""Root conftest: the harness's fixtures come from its pytest plugin (harness.pytest_plugin),
which the package registers through the pytest11 entry point."""

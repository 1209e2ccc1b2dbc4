"""amphora-harness: start real amphorae, drive them like a controller, test the live data plane."""

"""HTTP routes of the Amphora API, one module per area."""

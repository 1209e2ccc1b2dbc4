"""Where a lab runs: docker (default) or netns."""

"""Where the harness finds its data: images/, fixtures/ and scenarios/ sit beside harness/."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO_ROOT / "images"
FIXTURES_DIR = REPO_ROOT / "fixtures"
SCENARIOS_DIR = REPO_ROOT / "scenarios"

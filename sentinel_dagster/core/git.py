"""The code's git commit, for manifests and MLflow runs: looked up once per process and
never an error (an installed package has no checkout; training does not depend on it)."""

import functools
import subprocess
from pathlib import Path


@functools.cache
def commit() -> str | None:
    """The checkout's full commit, or None without git or a checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = done.stdout.strip()
    return found if done.returncode == 0 and found else None


def code_version() -> str:
    """The short commit a bundle's manifest records, or "unknown"."""
    found = commit()
    return found[:7] if found else "unknown"

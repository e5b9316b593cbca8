"""The bundle registry under SENTINEL_HOME/registry: immutable bundles and three pointers.

`champion`, `challenger` and `previous_champion` are small files naming a bundle version.
Each is swapped atomically (write a temporary file, fsync, rename, fsync the folder), so a
reader sees the old pointer or the new one, never a torn write.
"""

import json
import os
import shutil
import time
from pathlib import Path

POINTERS = ("champion", "challenger", "previous_champion")
STALE_TMP_S = 600.0  # a publish takes seconds: a `.tmp-*` folder this old was abandoned


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.bundles = self.root / "bundles"

    def bundle_dir(self, version: str) -> Path:
        return self.bundles / version

    def versions(self) -> list[str]:
        if not self.bundles.exists():
            return []
        return sorted(p.name for p in self.bundles.iterdir() if not p.name.startswith("."))

    def pointer(self, name: str) -> str | None:
        """The version a pointer names, or None if it is unset."""
        if name not in POINTERS:
            raise ValueError(f"unknown pointer {name!r}; one of {', '.join(POINTERS)}")
        try:
            return (self.root / name).read_text().strip() or None
        except FileNotFoundError:
            return None

    def set_pointer(self, name: str, version: str | None) -> None:
        if name not in POINTERS:
            raise ValueError(f"unknown pointer {name!r}; one of {', '.join(POINTERS)}")
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / name
        if version is None:
            target.unlink(missing_ok=True)
        else:
            if not self.bundle_dir(version).is_dir():
                raise ValueError(f"no bundle {version!r} in {self.bundles}")
            tmp = self.root / f".{name}.tmp"
            with tmp.open("w") as f:
                f.write(version + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)  # make the rename itself durable
        finally:
            os.close(fd)

    def find_run(self, mlflow_run_id: str) -> str | None:
        """The version published from this MLflow run, if any (a run is published once)."""
        for version in self.versions():
            manifest = self.bundle_dir(version) / "manifest.json"
            try:
                if json.loads(manifest.read_text()).get("mlflow_run_id") == mlflow_run_id:
                    return version
            except (OSError, ValueError):
                continue
        return None

    def clean_stale(self, older_than_s: float = STALE_TMP_S, now: float | None = None) -> list[str]:
        """Remove `.tmp-*` folders a killed publish left behind (none is ever renamed into
        place after this long); returns their names."""
        if not self.bundles.exists():
            return []
        now = time.time() if now is None else now
        removed = []
        for path in self.bundles.glob(".tmp-*"):
            try:
                if now - path.stat().st_mtime > older_than_s:
                    shutil.rmtree(path)
                    removed.append(path.name)
            except FileNotFoundError:  # another publisher cleaned it first
                continue
        return removed

    def pointers(self) -> dict[str, str | None]:
        return {name: self.pointer(name) for name in POINTERS}

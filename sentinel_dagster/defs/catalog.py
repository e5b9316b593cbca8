"""What the Dagster UI shows of each asset beyond its code: owners, tags and a code version.

The code version is a digest of the source files whose logic the asset runs, so Dagster
marks a materialization stale ("code version changed") when that logic changes, and only
then: a hand-kept number would depend on someone remembering to bump it.
"""

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any

OWNERS = ["team:fraud-ml"]  # Dagster's form: an email address or `team:<name>`


def code_version(*modules: ModuleType) -> str:
    """A short digest of these modules' source files, in the order given."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:12]


def catalog(stage: str, *modules: ModuleType, card_data: bool = False) -> dict[str, Any]:
    """`@dg.asset` arguments: the owners, the tags (the stage; `card_data` where rows carry
    card ids, for whoever governs such data) and the code version of `modules`."""
    tags = {"stage": stage, "card_data": "yes" if card_data else "no"}
    return {"owners": OWNERS, "tags": tags, "code_version": code_version(*modules)}

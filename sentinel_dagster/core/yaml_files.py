"""Reading a user-supplied YAML file with one clear error for a missing or broken file."""

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """The file is missing, unreadable or not YAML; the message names it."""


def read_yaml(path: Path, what: str) -> Any:
    """The parsed content of `path`; `what` names the file in errors ("policy file")."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise YamlFileError(f"{what} not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise YamlFileError(f"{what} {path} is not readable YAML: {exc}") from None

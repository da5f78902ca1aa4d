"""Where llmdctl's shipped data and its run state live.

Data folders (`profiles/`, `manifests/`) sit at the repository root in a checkout and are copied into
`llmdctl/_data/` in a wheel; both layouts resolve here so nothing else cares which one is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped data folder `name` (`profiles` or `manifests`), wheel or checkout."""
    installed = _PACKAGE_DIR / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / name


def profiles_dir() -> Path:
    return data_dir("profiles")


def manifests_dir() -> Path:
    return data_dir("manifests")


def home_dir() -> Path:
    """The run directory holding pids, ports, logs and the active profile (`$LLMDCTL_HOME`)."""
    return Path(os.environ.get("LLMDCTL_HOME", Path.home() / ".llmdctl")).expanduser()

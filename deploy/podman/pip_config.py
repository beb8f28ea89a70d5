"""Fold this machine's pip configuration into one file for `podman build` (used by deploy/image-test.sh).

pip reads its settings from several files and PIP_* variables; a build container sees none of them. This
writes what `pip config list` shows, merged as pip merges it (variables win), to the file named by argv[1]
(mounted at /etc/pip.conf in the build) and prints each host path those settings name (CA bundle,
constraints, local wheel folders), one per line, to mount read-only at the same place.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path


def settings() -> dict[str, dict[str, str]]:
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    from_files: dict[str, dict[str, str]] = {}
    from_env: dict[str, str] = {}
    for line in listed.splitlines():
        m = re.fullmatch(r"(:env:|[a-z]+)\.([a-z0-9-]+)='(.*)'", line.strip())
        if m is None:
            continue
        section, key, value = m.groups()
        if section == ":env:":
            from_env[key] = value
        else:
            from_files.setdefault(section, {})[key] = value
    from_files.setdefault("global", {}).update(from_env)
    return from_files


def host_paths(values: list[str]) -> set[Path]:
    """Absolute paths and file:// URLs that exist; a PEP 503 `simple` index links files beside it."""
    found = set()
    for value in values:
        for word in value.split():
            path = Path(word.removeprefix("file://"))
            if not path.is_absolute() or not path.exists():
                continue
            found.add(path.parent if path.is_dir() and path.name == "simple" else path)
    return found


def main() -> int:
    merged = settings()
    config = configparser.ConfigParser(interpolation=None)
    config.read_dict(merged)
    with Path(sys.argv[1]).open("w", encoding="utf-8") as out:
        config.write(out)
    for path in sorted(host_paths([v for section in merged.values() for v in section.values()])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

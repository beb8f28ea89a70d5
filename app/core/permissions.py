"""Who could change a model before it is loaded: a model file is code (a pickle runs on load; a graph decides every
answer), and its expected sha256 comes from the manifest beside it, so whoever can write the file, its manifest
or the folder that holds them can make the server run their code.

The rule is the one ssh applies to its keys (StrictModes): the folder, the manifest and the model file must not be
group- or world-writable, and must be owned by the user the server runs as or by root. On a read-only mount
(a container's `:ro` volume) the owner is not checked, since the host's uid rarely matches the container's and
nobody can write through the mount; the mode still is, because whoever the mode lets in can write on the host.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from app.core.errors import ModelLoadError

WHY = "whoever can write it can make the server run their code"


def check_model_paths(model: Path, manifest: Path) -> None:
    """Refuse the model's folder, its manifest or the model file (in that order) when another user could change
    them. Missing paths are left to the caller's own checks."""
    for path, what in ((model.parent, "model folder"), (manifest, "manifest"), (model, "model file")):
        check_path(path, what)


def check_path(path: Path, what: str) -> None:
    try:
        st = path.stat()
    except OSError:
        return
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ModelLoadError(
            f"{what} {path} is group- or world-writable (mode {stat.filemode(st.st_mode)}): {WHY}; "
            f"fix it with `chmod go-w {path}`"
        )
    me = os.geteuid()
    if st.st_uid not in (me, 0) and not read_only(path):
        raise ModelLoadError(
            f"{what} {path} is owned by uid {st.st_uid}, not by this user (uid {me}) or root: {WHY}; "
            f"fix it with `chown {me} {path}` or serve it from a read-only mount (see SECURITY.md)"
        )


def read_only(path: Path) -> bool:
    """Whether `path` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False

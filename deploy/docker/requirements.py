"""Write the images' requirement lists from pyproject.toml (the Dockerfile's `requirements` stage runs this).

requirements.txt: the serving core and the extras named in argv[1] (default `all`: fastai, torch, ONNX Runtime,
pyarrow): the default image; `all,ray` adds Ray for `score --engine ray` (deploy/ray/rayjob.yaml).
requirements-slim.txt: the serving core and the `onnx` extra, neither torch nor fastai: the slim image.
Extras that name `learnserve[...]` are expanded here, since the project itself is installed from its wheel.
"""

import re
import sys
import tomllib


def expand(extras: dict[str, list[str]], names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for requirement in extras[name]:
            inner = re.fullmatch(r"learnserve\[(.+)\]", requirement)
            out += expand(extras, inner.group(1).split(",")) if inner else [requirement]
    return list(dict.fromkeys(out))


with open("pyproject.toml", "rb") as toml:
    project = tomllib.load(toml)["project"]
extras = project["optional-dependencies"]
full = (sys.argv[1] if len(sys.argv) > 1 else "all").split(",")
for path, names in (("requirements.txt", full), ("requirements-slim.txt", ["onnx"])):
    with open(path, "w") as f:
        f.write("\n".join(project["dependencies"] + expand(extras, names)) + "\n")

#!/usr/bin/env bash
# Build the learnserve images (the default target and `--target slim`) from the unmodified Dockerfile with rootful
# podman, run each the way a user would, and check it: read-only root filesystem, HEALTHCHECK turns healthy, real
# PNGs are classified, the process is not root and cannot write models/, SIGTERM ends it with exit code 0; the
# slim image must hold neither torch nor fastai. Prints both images' sizes. `make image-test` runs this.
#
#   deploy/image-test.sh            base (if not cached) + build + run checks
#   deploy/image-test.sh base       only make the local python:3.11-slim stand-in
#   deploy/image-test.sh build      base + build, no run
#   deploy/image-test.sh run        only the run checks, on the image the last build made
#   extra `podman build` arguments: IMAGE_BUILD_ARGS='--build-arg TORCH_INDEX_URL=...' deploy/image-test.sh
#
# Made for a machine with no Docker engine and no image registry:
# - containers.conf and storage.conf are generated into the cache from deploy/podman/*.in;
# - the base image docker.io/library/python:3.11-slim is made locally with debootstrap (Debian bookworm, whose
#   python3 is 3.11) and cached; the build uses --pull=never;
# - the build mounts the host's CA bundle, pip configuration and the local wheel folders that configuration
#   names, so PyTorch installs from disk where the host has it there.
# Caches (rootfs tarball, image storage) live in $LEARNSERVE_IMAGE_CACHE, never in the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LEARNSERVE_IMAGE_CACHE:-/var/cache/learnserve-image}
IMAGE=${IMAGE:-localhost/learnserve:image-test}
IMAGE_SLIM=${IMAGE_SLIM:-localhost/learnserve:image-test-slim}
BASE_IMAGE=docker.io/library/python:3.11-slim
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PORT=${IMAGE_TEST_PORT:-18080}
HEALTHY_WITHIN_S=${IMAGE_TEST_HEALTHY_WITHIN_S:-240}
RUN_ID=learnserve-image-test-$$
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
STARTED=$SECONDS

log() { printf '[image-test %4ds] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}
# Without systemd, podman 4 logs an error for each health check timer it cannot create; there are none to
# create here: `podman healthcheck run` runs the image's HEALTHCHECK when asked.
podman() { command podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

setup_podman() {
    [[ $(id -u) -eq 0 ]] || die "rootful podman is needed: run as root"
    local tools=(podman buildah debootstrap runc fuse-overlayfs slirp4netns newuidmap curl)
    local missing=()
    for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if ((${#missing[@]})); then
        log "installing podman and friends (missing: ${missing[*]})"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            podman buildah fuse-overlayfs slirp4netns uidmap debootstrap runc curl
    fi
    mkdir -p "$CACHE"
    local nofile
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    sed "s/@NOFILE@/$nofile/g" "$ROOT/deploy/podman/containers.conf.in" >"$CACHE/containers.conf"
    sed "s#@CACHE@#$CACHE#g" "$ROOT/deploy/podman/storage.conf.in" >"$CACHE/storage.conf"
    export CONTAINERS_CONF=$CACHE/containers.conf CONTAINERS_STORAGE_CONF=$CACHE/storage.conf
}

# The official python:3.11-slim cannot be pulled here, so make a stand-in with the same name: Debian bookworm
# minbase with python3 (3.11), venv, pip and `python` on PATH. Cached as an image and as a rootfs tarball.
make_base() {
    if podman image exists "$BASE_IMAGE"; then
        log "base $BASE_IMAGE: cached"
        return
    fi
    local rootfs=$CACHE/rootfs-$SUITE tarball=$CACHE/rootfs-$SUITE.tar
    if [[ ! -s $tarball ]]; then
        log "debootstrap $SUITE from $MIRROR (a few minutes, once)"
        rm -rf "$rootfs"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
            "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
            die "debootstrap failed, see $CACHE/debootstrap.log"
        # pip may install into the system interpreter in an image, as in the official one
        rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/dev/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
        rm -rf "$rootfs"
    fi
    log "importing $tarball as $BASE_IMAGE"
    podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$BASE_IMAGE" >/dev/null
}

# The host's pip configuration, merged into $CACHE/pip.conf, and the host paths it names, one per line
# (see deploy/podman/pip_config.py).
pip_paths() {
    local py
    if [[ -x $ROOT/.venv/bin/python ]]; then
        py=$ROOT/.venv/bin/python
    elif python3 -m pip --version >/dev/null 2>&1; then
        py=python3
    else
        return 0
    fi
    "$py" "$ROOT/deploy/podman/pip_config.py" "$CACHE/pip.conf"
}

build_image() {  # build_image TARGET TAG
    # HTTPS from inside the build goes through this machine's TLS proxy, so its CA bundle is needed there;
    # pip's configuration and the wheel folders it names make PyTorch install from disk where it lies there.
    local mounts=() path
    rm -f "$CACHE/pip.conf"
    while read -r path; do
        mounts+=(-v "$path:$path:ro")
    done < <({ [[ -f $CA_BUNDLE ]] && echo "$CA_BUNDLE"; pip_paths; } | sort -u)
    [[ -s $CACHE/pip.conf ]] && mounts+=(-v "$CACHE/pip.conf:/etc/pip.conf:ro")
    local extra=()
    read -r -a extra <<<"${IMAGE_BUILD_ARGS:-}"
    local target=$1 tag=$2
    log "podman build --target $target $tag (mounts: ${mounts[*]:-none})"
    local t0=$SECONDS previous
    previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    podman build --format docker --pull=never --layers --target "$target" -t "$tag" "${mounts[@]}" "${extra[@]}" "$ROOT"
    log "built $tag in $((SECONDS - t0)) s"
    # Drop the image this build replaced (not `podman image prune`: that also drops the cached build stages).
    if [[ -n $previous && $previous != "$(podman image inspect --format '{{.Id}}' "$tag")" ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
}

cleanup() {
    podman rm -f -t 0 --ignore "$RUN_ID" "$RUN_ID-probe" >/dev/null 2>&1 || true
    [[ -n ${WORK:-} ]] && rm -rf "$WORK"
}

wait_healthy() {
    local deadline=$((SECONDS + HEALTHY_WITHIN_S)) state
    until podman healthcheck run "$RUN_ID" >/dev/null 2>&1; do
        state=$(podman inspect --format '{{.State.Status}}' "$RUN_ID")
        if [[ $state != running ]]; then
            podman logs "$RUN_ID" >&2 || true
            die "container is $state before it became healthy"
        fi
        ((SECONDS < deadline)) || {
            podman logs "$RUN_ID" >&2
            die "not healthy within ${HEALTHY_WITHIN_S}s"
        }
        sleep 2
    done
    log "healthy: $(podman inspect --format '{{.State.Health.Status}}' "$RUN_ID")"
}

# Real PNGs of handwritten digits (scikit-learn's set, which the image ships), written by the image itself.
make_pngs() {
    podman run --rm --no-healthcheck --network none -v "$WORK:/out" --entrypoint python "$IMAGE" -c '
from sklearn.datasets import load_digits
from PIL import Image
d = load_digits()
for i in (3, 100, 500, 1000, 1500):
    img = Image.fromarray((d.images[i] * 255 / 16).astype("uint8")).resize((28, 28))
    img.save(f"/out/{i}_{d.target[i]}.png")
'
}

run_checks() {  # run_checks IMAGE: the PNGs in $WORK were made by make_pngs
    local image=$1
    log "run $image read-only on 127.0.0.1:$PORT"
    # --health-interval=disable: no systemd timer here; `podman healthcheck run` runs the image's HEALTHCHECK
    podman run -d --name "$RUN_ID" --read-only --tmpfs /tmp:rw,mode=1777,size=256m \
        --health-interval=disable -p "127.0.0.1:$PORT:8000" "$image" >/dev/null
    wait_healthy

    local ok=0 total=0 png answer want got
    for png in "$WORK"/*.png; do
        want=$(basename "$png" .png)
        want=${want#*_}
        answer=$(curl -fsS --max-time 30 -F "file=@$png;type=image/png" "http://127.0.0.1:$PORT/predict") ||
            die "POST /predict failed for $png"
        got=$(python3 -c 'import json,sys; r=json.load(sys.stdin); assert {"label","probability","top"} <= r.keys(), r; print(r["label"])' <<<"$answer") ||
            die "unexpected /predict answer: $answer"
        log "predict $(basename "$png"): $answer"
        total=$((total + 1))
        [[ $got == "$want" ]] && ok=$((ok + 1))
    done
    ((ok * 5 >= total * 4)) || die "only $ok of $total digits classified right"
    log "predict: $ok of $total digits right"

    local uid
    uid=$(podman exec "$RUN_ID" awk '/^Uid:/ {print $2}' /proc/1/status)
    [[ $uid != 0 ]] || die "the server runs as root"
    log "server runs as uid $uid"
    # models/ must be unwritable by the server's user for its own reason (ownership and mode), not only because
    # of --read-only: try again in a container with a writable root filesystem.
    # argv[1]: the errors that count as refused (EACCES alone where the root filesystem is writable)
    local probe='
import errno, os, sys
model = os.environ["LEARNSERVE_MODEL_PATH"]
refused = {errno.EACCES, errno.EPERM} | ({errno.EROFS} if sys.argv[1] == "read-only" else set())
for path, mode in ((model, "ab"), (os.path.join(os.path.dirname(model), "new"), "wb")):
    try:
        open(path, mode).close()
    except OSError as e:
        if e.errno not in refused:
            raise
        print(f"uid {os.getuid()} cannot write {path}: {e.strerror}")
    else:
        sys.exit(f"uid {os.getuid()} wrote {path}")
'
    podman exec "$RUN_ID" python -c "$probe" read-only >&2 || die "models/ writable in the running container"
    podman run --rm --no-healthcheck --name "$RUN_ID-probe" --network none "$image" python -c "$probe" writable >&2 ||
        die "models/ writable by the image's user"
    local rss
    rss=$(podman exec "$RUN_ID" awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' /proc/1/status)
    log "server resident memory after the checks: $rss MB"

    log "podman stop (the image's STOPSIGNAL, then up to 30 s to drain)"
    local t0=$SECONDS code
    podman stop -t 30 "$RUN_ID" >/dev/null
    code=$(podman inspect --format '{{.State.ExitCode}}' "$RUN_ID")
    podman logs --tail 5 "$RUN_ID" >&2 || true
    [[ $code == 0 ]] || die "exit code $code after SIGTERM"
    log "exited 0 after SIGTERM in $((SECONDS - t0)) s"
    podman rm -f -t 0 --ignore "$RUN_ID" >/dev/null
}

check_slim_has_no_torch() {
    local module
    for module in torch fastai torchvision; do
        if podman run --rm --no-healthcheck --network none "$IMAGE_SLIM" python -c "import $module" 2>/dev/null; then
            die "the slim image can import $module"
        fi
    done
    log "the slim image has neither torch nor fastai"
}

size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.2f GB (%.0f MB)", $1 / 1e9, $1 / 1e6}'; }

main() {
    local what=${1:-all}
    [[ $what =~ ^(all|base|build|run)$ ]] || die "usage: $0 [all|base|build|run]"
    setup_podman
    if [[ $what != run ]]; then
        make_base
        [[ $what == base ]] && return
        build_image runtime "$IMAGE"
        build_image slim "$IMAGE_SLIM"
        [[ $what == build ]] && return
    fi
    WORK=$(mktemp -d)
    chmod 0777 "$WORK"
    trap cleanup EXIT
    make_pngs
    run_checks "$IMAGE"
    run_checks "$IMAGE_SLIM"
    check_slim_has_no_torch
    log "PASS in $((SECONDS - STARTED)) s; image $IMAGE: $(size "$IMAGE"); slim image $IMAGE_SLIM: $(size "$IMAGE_SLIM")"
}

main "$@"

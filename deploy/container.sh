#!/usr/bin/env bash
# Container engine helpers shared by deploy/image.mk and Tests/e2e/test-container.sh.
#
#   deploy/container.sh engine                  prints docker, podman or buildah (the first that works), or
#                                               prints why none does on stderr and exits 1
#   deploy/container.sh can-run ENGINE IMAGE    exits 0 when ENGINE can start a container from IMAGE here
#   deploy/container.sh build BINARY IMAGE      builds IMAGE from Containerfile with BINARY copied in
#   deploy/container.sh base ENGINE             prints the base image to build from (pulled or made locally)
#   deploy/container.sh cmd ENGINE              prints the engine command with its global flags (podman --runtime)
#   deploy/container.sh run-flags ENGINE        prints the flags every `run` here needs (ulimits)
#
# Environment:
#   BASE_IMAGE        base of the runtime image (default debian:bookworm-slim)
#   LOCAL_BASE_IMAGE  what `make base-image` creates and `build` falls back to (default localhost/debian:bookworm-slim)
#   CONTAINER_ENGINE  force an engine instead of detecting one
#   CONTAINER_RUNTIME podman/buildah OCI runtime (default: runc when installed; this sandbox refuses crun)
#   CONTAINER_ULIMITS ulimit flags for build and run (default nofile and nproc 4096; this sandbox refuses the
#                     engines' defaults). Set either to an empty string to use the engine's own default.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

: "${BASE_IMAGE:=debian:bookworm-slim}"
: "${LOCAL_BASE_IMAGE:=localhost/debian:bookworm-slim}"
if [[ -z "${CONTAINER_RUNTIME+set}" ]]; then
    CONTAINER_RUNTIME=$(command -v runc 2>/dev/null || true)
fi
if [[ -z "${CONTAINER_ULIMITS+set}" ]]; then
    CONTAINER_ULIMITS="--ulimit nofile=4096:4096 --ulimit nproc=4096:4096"
fi

die() { echo "container: $*" >&2; exit 1; }
say() { echo "container: $*" >&2; }

# The engine-wide flags (podman and buildah take the runtime as a global option).
engine_cmd() { # ENGINE
    case $1 in
        docker) echo docker ;;
        podman) echo "podman${CONTAINER_RUNTIME:+ --runtime $CONTAINER_RUNTIME}" ;;
        buildah) echo buildah ;; # its runtime is a build option (see build)
        *) die "unknown container engine '$1'" ;;
    esac
}

detect_engine() {
    if [[ -n "${CONTAINER_ENGINE:-}" ]]; then
        echo "$CONTAINER_ENGINE"
        return 0
    fi
    local why=()
    # A docker CLI without a daemon is common (and is the case on the project's VMs): only an answering engine counts.
    if command -v docker >/dev/null 2>&1; then
        if timeout 20 docker info >/dev/null 2>&1; then echo docker; return 0; fi
        why+=("docker: no engine answers 'docker info'")
    else
        why+=("docker: not installed")
    fi
    if command -v podman >/dev/null 2>&1; then
        if timeout 30 podman info >/dev/null 2>&1; then echo podman; return 0; fi
        why+=("podman: 'podman info' fails")
    else
        why+=("podman: not installed")
    fi
    if command -v buildah >/dev/null 2>&1; then
        if timeout 30 buildah info >/dev/null 2>&1; then echo buildah; return 0; fi
        why+=("buildah: 'buildah info' fails")
    else
        why+=("buildah: not installed")
    fi
    local joined
    printf -v joined '%s; ' "${why[@]}"
    echo "no container engine works (${joined%; }): install podman and runc, or docker" >&2
    return 1
}

image_exists() { # ENGINE IMAGE
    case $1 in
        docker) docker image inspect "$2" >/dev/null 2>&1 ;;
        podman | buildah) podman image exists "$2" 2>/dev/null || buildah inspect --type image "$2" >/dev/null 2>&1 ;;
    esac
}

image_id() { # ENGINE IMAGE: the image's id, empty when absent
    case $1 in
        docker) docker image inspect --format '{{.Id}}' "$2" 2>/dev/null || true ;;
        podman) podman image inspect --format '{{.Id}}' "$2" 2>/dev/null || true ;;
        buildah) buildah inspect --type image --format '{{.FromImageID}}' "$2" 2>/dev/null || true ;;
    esac
}

# A short name (debian:bookworm-slim) names Docker Hub for docker; podman resolves it only with search registries
# configured, so it is qualified before pulling.
qualified() { # IMAGE
    local first=${1%%/*}
    if [[ "$1" != */* ]]; then
        echo "docker.io/library/$1"
    elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
        echo "docker.io/$1"
    else
        echo "$1"
    fi
}

# The base to build from: BASE_IMAGE when present or pullable, else LOCAL_BASE_IMAGE (made with debootstrap when
# missing). A pull is bounded: with no registry reachable it must fail, not hang.
resolve_base() { # ENGINE
    local engine=$1 puller
    if image_exists "$engine" "$BASE_IMAGE"; then
        # podman matches a short name against local images too (localhost/...): name the one it will use.
        [[ $engine == docker ]] && { echo "$BASE_IMAGE"; return 0; }
        podman image inspect --format '{{index .RepoTags 0}}' "$BASE_IMAGE" 2>/dev/null || echo "$BASE_IMAGE"
        return 0
    fi
    puller=$engine
    if [[ "$BASE_IMAGE" != localhost/* ]]; then
        local ref
        ref=$([[ $engine == docker ]] && echo "$BASE_IMAGE" || qualified "$BASE_IMAGE")
        if image_exists "$engine" "$ref"; then echo "$ref"; return 0; fi
        say "pulling $ref (at most 90 s)"
        if timeout 90 "$puller" pull -q "$ref" >/dev/null 2>&1; then echo "$ref"; return 0; fi
        say "cannot pull $ref (no registry reachable?); using the local base $LOCAL_BASE_IMAGE"
    fi
    if ! image_exists "$engine" "$LOCAL_BASE_IMAGE"; then
        say "$LOCAL_BASE_IMAGE is missing: creating it with debootstrap (make base-image)"
        "$here/make-base-image.sh" "$engine" "$LOCAL_BASE_IMAGE" >&2
    fi
    echo "$LOCAL_BASE_IMAGE"
}

can_run() { # ENGINE IMAGE
    local engine=$1 image=$2
    [[ $engine == buildah ]] && return 1 # buildah builds images; it does not run services
    # shellcheck disable=SC2086
    timeout 60 $(engine_cmd "$engine") run --rm $CONTAINER_ULIMITS --network host --entrypoint true "$image" \
        >/dev/null 2>&1
}

build() { # BINARY IMAGE
    local binary=$1 image=$2 engine base context old_id new_id
    [[ -x "$binary" ]] || die "binary '$binary' not found (make image builds it)"
    # The image carries no Swift runtime: the binary must link the standard library statically.
    if ldd "$binary" | grep -q 'libswift'; then
        local dynamic
        dynamic=$(ldd "$binary" | grep -o 'libswift[^ ]*' | head -n 3 | tr '\n' ' ')
        die "$binary links the Swift runtime dynamically ($dynamic): build it with --static-swift-stdlib"
    fi
    if ldd "$binary" | grep -q 'not found'; then
        die "$binary has unresolved libraries: $(ldd "$binary" | grep 'not found' | tr '\n' ' ')"
    fi
    engine=$(detect_engine) || exit 1
    base=$(resolve_base "$engine")
    context=$repo/.build/image-context
    rm -rf "$context"
    mkdir -p "$context"
    # shellcheck disable=SC2064 # expanded now: $context is local to this function
    trap "rm -rf '$context'" EXIT
    # The context holds only what the Containerfile copies, so a build never ships the whole .build tree.
    cp "$repo/Containerfile" "$context/Containerfile"
    cp "$binary" "$context/conntrackr"
    # Debug info is 20 MB of the binary; the symbol table stays for readable backtraces.
    if command -v strip >/dev/null 2>&1; then strip --strip-debug "$context/conntrackr"; fi
    old_id=$(image_id "$engine" "$image")
    say "building $image with $engine from $base"
    local cmd
    cmd=$(engine_cmd "$engine")
    case $engine in
        docker)
            timeout 900 docker build --network host --build-arg "BASE_IMAGE=$base" -t "$image" \
                -f "$context/Containerfile" "$context"
            ;;
        podman)
            # No --layers: cached intermediate images would keep every old binary layer (85 MB each) on disk; the
            # apt step it would save takes seconds.
            # shellcheck disable=SC2086
            timeout 900 $cmd build --network host $CONTAINER_ULIMITS --layers=false --build-arg "BASE_IMAGE=$base" \
                -t "$image" -f "$context/Containerfile" "$context"
            ;;
        buildah)
            # shellcheck disable=SC2086
            timeout 900 $cmd bud ${CONTAINER_RUNTIME:+--runtime "$CONTAINER_RUNTIME"} --network host \
                $CONTAINER_ULIMITS --layers=false --build-arg "BASE_IMAGE=$base" \
                -t "$image" -f "$context/Containerfile" "$context"
            ;;
    esac
    rm -rf "$context"
    new_id=$(image_id "$engine" "$image")
    [[ -n "$new_id" ]] || die "the build reported success but $image does not exist"
    # The image this build replaced is now untagged: remove it (only it; other dangling images are not ours).
    if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
        case $engine in
            docker) docker image rm "$old_id" >/dev/null 2>&1 || true ;;
            podman) podman image rm "$old_id" >/dev/null 2>&1 || true ;;
            buildah) buildah rmi "$old_id" >/dev/null 2>&1 || true ;;
        esac
    fi
    say "$image built ($engine, base $base)"
}

case ${1:-} in
    engine) detect_engine ;;
    can-run) can_run "${2:?engine}" "${3:?image}" ;;
    base) resolve_base "${2:?engine}" ;;
    build) build "${2:?binary}" "${3:?image}" ;;
    cmd) engine_cmd "${2:?engine}" ;;
    run-flags) echo "$CONTAINER_ULIMITS" ;;
    *)
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac

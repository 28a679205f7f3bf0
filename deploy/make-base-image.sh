#!/usr/bin/env bash
# Creates a local Debian base image (default localhost/debian:bookworm-slim) with debootstrap, for machines where
# no container registry is reachable but Debian's archive is. The result is a minbase bookworm root file system,
# trimmed the way the official -slim images are (no documentation, man pages or apt lists), imported with
# `ENGINE import`.
#
# Usage: deploy/make-base-image.sh ENGINE IMAGE [SUITE] [MIRROR]
#   ENGINE  docker, podman or buildah (buildah imports through podman's storage, which it shares)
#   MIRROR  default: the first Debian mirror configured for apt on this machine (never a hard-coded host)
set -euo pipefail

engine=${1:?usage: $0 ENGINE IMAGE [SUITE] [MIRROR]}
image=${2:?usage: $0 ENGINE IMAGE [SUITE] [MIRROR]}
suite=${3:-bookworm}
mirror=${4:-}

die() { echo "make-base-image: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

# The mirror apt already uses here: deb822 .sources files first (URIs: with a Suites: line naming SUITE), then
# one-line sources. Security and third-party repositories are skipped: only a mirror of the main archive carries
# the suite itself.
configured_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e "$f" ]] || continue
        awk -v suite="$suite" '
            function flush() {
                if (uri != "" && suites ~ ("(^| )" suite "( |$)")) { print uri; found = 1; exit }
                uri = ""; suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -e "$f" ]] || continue
        # "deb [options] URI SUITE COMPONENTS...": skip the bracketed options, then match the suite.
        awk -v suite="$suite" '$1 == "deb" {
            i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) print $i
        }' "$f"
    done
}
if [[ -z "$mirror" ]]; then
    mirror=$(configured_mirror | head -n 1) || true
    [[ -n "$mirror" ]] || die "no apt source for '$suite' in /etc/apt/sources.list(.d): pass a mirror (BASE_MIRROR=...)"
fi

case $engine in
    docker | podman) importer=$engine ;;
    buildah) importer=podman ;; # buildah has no import; podman shares its storage
    *) die "unknown container engine '$engine'" ;;
esac
command -v "$importer" >/dev/null || die "'$importer' is not installed"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/conntrackr-base.XXXXXX")
cleanup() { rm -rf --one-file-system -- "$work"; }
trap cleanup EXIT
rootfs=$work/rootfs

echo "make-base-image: debootstrap --variant=minbase $suite from $mirror"
# Bounded: a minbase bootstrap fetches about 30 MB; half an hour covers a slow mirror, not a hung one.
if ! timeout 1800 debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
fi

# Slim it as the official images do, and keep later `apt-get install` runs slim too.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/*
# The host's name and resolver are provided by the engine at run time.
rm -f "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"
: >"$rootfs/etc/machine-id" 2>/dev/null || true

echo "make-base-image: importing as $image with $importer"
quiet=()
[[ $importer == podman ]] && quiet=(--quiet)
tar --numeric-owner --xattrs -C "$rootfs" -c . |
    "$importer" import "${quiet[@]}" --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image" >/dev/null
"$importer" image inspect "$image" >/dev/null || die "import of $image failed"
echo "make-base-image: $image ready"

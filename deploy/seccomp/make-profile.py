#!/usr/bin/env python3
"""Writes a seccomp profile for conntrackr's container: the engine's default profile, with bpf(2) allowed to a
container holding CAP_BPF and perf_event_open(2) to one holding CAP_PERFMON.

Why: since Linux 5.8 the kernel lets CAP_BPF (+ CAP_NET_ADMIN for XDP) load and attach BPF programs, but older
default profiles (podman's containers-common before 2025, docker before 23.0, containerd before 1.6.9) still allow
bpf(2) only with CAP_SYS_ADMIN. Granting SYS_ADMIN to satisfy a filter would hand the container most of root; this
profile keeps every other rule of the default and changes only those two system calls.

Usage: make-profile.py [DEFAULT-PROFILE] > conntrackr-seccomp.json
  DEFAULT-PROFILE  default /usr/share/containers/seccomp.json (podman, buildah, CRI-O)
Then: podman run --security-opt seccomp=conntrackr-seccomp.json ... (docker run takes the same option).
"""
import json
import sys

# The system call and the capability that is enough for it since Linux 5.8.
GATED = {"bpf": "CAP_BPF", "perf_event_open": "CAP_PERFMON"}


def rule(name, action, includes=(), excludes=(), errno=None):
    entry = {
        "names": [name],
        "action": action,
        "args": [],
        "comment": f"conntrackr: {name} with {GATED[name]} (Linux 5.8+) or CAP_SYS_ADMIN",
        "includes": {"caps": list(includes)} if includes else {},
        "excludes": {"caps": list(excludes)} if excludes else {},
    }
    if errno is not None:
        entry["errnoRet"] = errno
    return entry


def rewrite(profile):
    syscalls = profile.get("syscalls")
    if not isinstance(syscalls, list):
        raise ValueError("no 'syscalls' list: not an OCI/docker seccomp profile")
    kept = []
    for entry in syscalls:
        names = [n for n in entry.get("names", []) if n not in GATED]
        if names:
            kept.append(dict(entry, names=names))
    for name, cap in GATED.items():
        # Exactly one of the three applies to any capability set: an engine refuses two rules with different
        # actions for one call, and a rule is skipped when the container lacks an included capability or holds
        # an excluded one.
        kept.append(rule(name, "SCMP_ACT_ALLOW", includes=[cap]))
        kept.append(rule(name, "SCMP_ACT_ALLOW", includes=["CAP_SYS_ADMIN"], excludes=[cap]))
        kept.append(rule(name, "SCMP_ACT_ERRNO", excludes=["CAP_SYS_ADMIN", cap], errno=1))
    return dict(profile, syscalls=kept)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"
    try:
        with open(path) as source:
            profile = json.load(source)
        result = rewrite(profile)
    except (OSError, ValueError) as error:
        print(f"make-profile: {path}: {error}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Validates conntrackr's deployment files without a cluster: deploy/kubernetes/*.yaml, deploy/conntrackr.yaml,
deploy/systemd/conntrackr.service and the Containerfile.

Usage: check_manifests.py REPO [--flags FILE]
  --flags FILE  the long option names `conntrackr run` accepts, one per line (without dashes); every key of the
                configuration file must be one of them.
Prints one line per check that failed ("FAIL: ...") and exits 1 if any did; prints a summary otherwise.
"""
import argparse
import os
import re
import sys

import yaml

# What every mode of the agent may need, and nothing more (see the DaemonSet's comments).
CAPABILITIES = {"NET_ADMIN", "NET_RAW", "BPF", "PERFMON"}
BPFFS = "/sys/fs/bpf"
FAMILIES = {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"}

failures = []
passed = 0


def check(condition, what):
    global passed
    if condition:
        passed += 1
    else:
        failures.append(what)
    return condition


def load_all(path):
    with open(path) as source:
        return [doc for doc in yaml.safe_load_all(source) if doc is not None]


def dig(obj, *keys, default=None):
    for key in keys:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def option_value(args, name):
    """The value of --name=VALUE or --name VALUE in a container's args."""
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def check_kubernetes(repo, config_text):
    kdir = os.path.join(repo, "deploy", "kubernetes")
    kustomization = yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml")))
    resources = kustomization.get("resources", [])
    check(resources, "kustomization.yaml lists no resources")
    objects = []
    for name in resources:
        path = os.path.join(kdir, name)
        if check(os.path.exists(path), f"kustomization.yaml lists {name}, which does not exist"):
            objects += load_all(path)
    for obj in objects:
        check(isinstance(obj, dict) and obj.get("apiVersion") and obj.get("kind") and dig(obj, "metadata", "name"),
              f"an object without apiVersion, kind or metadata.name: {str(obj)[:80]}")
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)

    namespaces = {dig(o, "metadata", "name") for o in by_kind.get("Namespace", [])}
    for obj in objects:
        ns = dig(obj, "metadata", "namespace")
        if ns is not None:
            check(ns in namespaces, f"{obj['kind']}/{obj['metadata']['name']} is in namespace {ns}, not created here")

    daemonsets = by_kind.get("DaemonSet", [])
    if not check(len(daemonsets) == 1, f"expected one DaemonSet, found {len(daemonsets)}"):
        return
    ds = daemonsets[0]
    name = f"DaemonSet/{ds['metadata']['name']}"
    check(ds.get("apiVersion") == "apps/v1", f"{name}: apiVersion is {ds.get('apiVersion')}, not apps/v1")
    spec = ds.get("spec", {})
    template = spec.get("template", {})
    pod = template.get("spec", {})
    selector = dig(spec, "selector", "matchLabels", default={})
    labels = dig(template, "metadata", "labels", default={})
    check(selector and all(labels.get(k) == v for k, v in selector.items()),
          f"{name}: selector {selector} does not match the template's labels {labels}")

    # Rollout.
    strategy = spec.get("updateStrategy", {})
    check(strategy.get("type") == "RollingUpdate", f"{name}: updateStrategy.type is not RollingUpdate")
    check(dig(strategy, "rollingUpdate", "maxUnavailable") is not None,
          f"{name}: updateStrategy.rollingUpdate.maxUnavailable is not set")

    # Every node: a toleration with operator Exists and no key tolerates every taint.
    check(any(t.get("operator") == "Exists" and "key" not in t and "effect" not in t
              for t in pod.get("tolerations", [])),
          f"{name}: no toleration for every taint (operator: Exists without key)")
    check(pod.get("hostNetwork") is True, f"{name}: hostNetwork is not true")
    check(pod.get("hostPID") is not True and pod.get("hostIPC") is not True, f"{name}: hostPID or hostIPC is set")
    priority = pod.get("priorityClassName")
    if priority and not priority.startswith("system-"):
        check(priority in {dig(o, "metadata", "name") for o in by_kind.get("PriorityClass", [])},
              f"{name}: priorityClassName {priority} is not defined here")

    containers = pod.get("containers", [])
    if not check(len(containers) == 1, f"{name}: expected one container, found {len(containers)}"):
        return
    container = containers[0]
    for c in containers + pod.get("initContainers", []):
        check(dig(c, "securityContext", "privileged") is not True, f"{name}: container {c.get('name')} is privileged")
    check(dig(pod, "securityContext", "privileged") is not True, f"{name}: the pod is privileged")

    caps = dig(container, "securityContext", "capabilities", default={})
    added = set(caps.get("add", []))
    check("ALL" in caps.get("drop", []), f"{name}: capabilities.drop does not contain ALL")
    check(added == CAPABILITIES, f"{name}: capabilities.add is {sorted(added)}, expected {sorted(CAPABILITIES)}")
    check("SYS_ADMIN" not in added and "CAP_SYS_ADMIN" not in added, f"{name}: adds SYS_ADMIN")
    check(dig(container, "securityContext", "allowPrivilegeEscalation") is False,
          f"{name}: allowPrivilegeEscalation is not false")

    # Configuration: --config points into the mounted ConfigMap, whose key exists.
    args = container.get("args", [])
    check(container.get("command") is None, f"{name}: command overrides the image's entrypoint")
    check(args[:1] == ["run"], f"{name}: args do not start with the run subcommand: {args}")
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    config_path = option_value(args, "config")
    config_maps = {dig(o, "metadata", "name"): o for o in by_kind.get("ConfigMap", [])}
    if check(config_path, f"{name}: no --config argument"):
        found = False
        for vname, volume in volumes.items():
            cm_name = dig(volume, "configMap", "name")
            mount = mounts.get(vname)
            mount_path = mount["mountPath"].rstrip("/") if mount else ""
            key = None
            if mount and mount.get("subPath") and config_path == mount_path:
                key = mount["subPath"]  # the key mounted as a file
            elif mount and config_path.startswith(mount_path + "/"):
                key = config_path[len(mount_path) + 1:]
                # Each key of a mounted ConfigMap directory is a symbolic link, which the agent refuses to read.
                check(not cm_name, f"{name}: --config {config_path} is a symbolic link in the mounted ConfigMap "
                                   f"{cm_name} (mount the key with subPath)")
            if cm_name and mount and key:
                cm = config_maps.get(cm_name)
                found = check(cm is not None, f"{name}: mounts ConfigMap {cm_name}, which is not defined here")
                if found:
                    found = check(key in cm.get("data", {}), f"ConfigMap/{cm_name} has no key {key} for --config")
                    text = cm["data"].get(key, "")
                    check(isinstance(yaml.safe_load(text), dict), f"ConfigMap/{cm_name}: {key} is not a YAML mapping")
                    check(text == config_text,
                          f"ConfigMap/{cm_name}: {key} differs from deploy/conntrackr.yaml (keep them identical)")
                check(mount.get("readOnly") is True, f"{name}: the configuration mount is not read-only")
        check(found, f"{name}: --config {config_path} is not inside a mounted ConfigMap")

    # bpffs: only the agent's own directory of the host's, mounted where --pin-dir points, so pins outlive the pod
    # and the pod sees no other pins.
    pin_dir = option_value(args, "pin-dir") or ""
    host_paths = {vname: dig(v, "hostPath", "path") for vname, v in volumes.items() if dig(v, "hostPath", "path")}
    check(not any(p.rstrip("/") == BPFFS for p in host_paths.values()),
          f"{name}: the host's whole {BPFFS} is mounted (mount only the agent's pin directory)")
    pin_mounts = [m for m in container.get("volumeMounts", []) if m.get("mountPath", "").rstrip("/") == pin_dir.rstrip("/")]
    if check(pin_dir and len(pin_mounts) == 1, f"{name}: --pin-dir {pin_dir!r} is not a mounted volume"):
        host_path = host_paths.get(pin_mounts[0]["name"], "")
        check(host_path.startswith(BPFFS + "/"), f"{name}: --pin-dir is not a directory of the host's {BPFFS} (hostPath)")
        check(pin_mounts[0].get("readOnly") is not True, f"{name}: --pin-dir is mounted read-only (pins need writes)")

    # Metrics: the port of --metrics-address, the container port, the probe and the scrape annotations agree.
    metrics_address = option_value(args, "metrics-address") or ""
    match = re.fullmatch(r"(.+):(\d+)", metrics_address)
    if check(match, f"{name}: --metrics-address {metrics_address!r} is not HOST:PORT"):
        port = int(match.group(2))
        host = match.group(1)
        check(host not in ("127.0.0.1", "localhost", "[::1]"),
              f"{name}: metrics bound to loopback: neither the kubelet's probe nor Prometheus could reach it")
        env_refs = re.findall(r"\$\((\w+)\)", host)
        check(not env_refs or (host.startswith("[") and host.endswith("]")),
              f"{name}: --metrics-address host {host!r} is not in brackets: an IPv6 node address would not parse")
        env_names = {e["name"] for e in container.get("env", [])}
        for ref in env_refs:
            check(ref in env_names, f"{name}: --metrics-address uses $({ref}), which env does not define")
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
        check(port in ports.values(), f"{name}: metrics port {port} is not a containerPort")
        probe = container.get("livenessProbe", {})
        check(dig(probe, "httpGet", "path") == "/healthz", f"{name}: livenessProbe is not httpGet /healthz")
        probe_port = dig(probe, "httpGet", "port")
        check(ports.get(probe_port, probe_port) == port,
              f"{name}: livenessProbe port {probe_port} is not the metrics port {port}")
        annotations = dig(template, "metadata", "annotations", default={})
        check(annotations.get("prometheus.io/scrape") == "true", f"{name}: prometheus.io/scrape is not \"true\"")
        check(str(annotations.get("prometheus.io/port")) == str(port),
              f"{name}: prometheus.io/port {annotations.get('prometheus.io/port')} is not {port}")
        check(annotations.get("prometheus.io/path", "/metrics") == "/metrics", f"{name}: prometheus.io/path")

    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            check(dig(resources, kind, resource) is not None, f"{name}: resources.{kind}.{resource} is not set")


def check_config(text, flags):
    config = yaml.safe_load(text)
    if not check(isinstance(config, dict), "deploy/conntrackr.yaml is not a YAML mapping"):
        return
    if flags is not None:
        for key in config:
            check(key in flags, f"deploy/conntrackr.yaml: '{key}' is not a flag of conntrackr run")
    check(config.get("metrics-address", "127.0.0.1:9542").startswith("127.0.0.1:"),
          "deploy/conntrackr.yaml: metrics should stay on loopback by default (the DaemonSet overrides it)")
    check(isinstance(config.get("allow", []), list), "deploy/conntrackr.yaml: allow is not a list")
    check(config.get("pin-dir", BPFFS + "/conntrackr").startswith(BPFFS + "/"),
          f"deploy/conntrackr.yaml: pin-dir is not under {BPFFS}")


def unit_settings(path):
    """systemd's unit syntax: [Section] and Key=Value lines; a key may repeat (values collected in order)."""
    settings = {}
    section = None
    for raw in open(path):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def check_unit(repo):
    path = os.path.join(repo, "deploy", "systemd", "conntrackr.service")
    unit = unit_settings(path)

    def value(key, section="Service"):
        values = unit.get((section, key))
        return values[-1] if values else None

    expected_caps = {"CAP_" + c for c in CAPABILITIES}
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        got = set((value(key) or "").split())
        check(got == expected_caps, f"conntrackr.service: {key} is {sorted(got)}, expected {sorted(expected_caps)}")
    for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                      ("PrivateTmp", "yes"), ("Restart", "on-failure")):
        check(value(key) == want, f"conntrackr.service: {key}={value(key)}, expected {want}")
    # The bpffs must be writable: ReadWritePaths= works only without ProtectKernelTunables= (which remounts /sys
    # read-only over it); otherwise a BindPaths= of it elsewhere, with --pin-dir there.
    exec_start = value("ExecStart") or ""
    binds = dict(b.split(":", 1) for b in (value("BindPaths") or "").split() if ":" in b)
    if value("ProtectKernelTunables") == "yes":
        # Only the agent's own directory of the bpffs, bound where --pin-dir points.
        check(BPFFS not in binds, f"conntrackr.service: the whole {BPFFS} is bound (bind only the pin directory)")
        pin_dir = (re.search(r"--pin-dir[ =](\S+)", exec_start) or [None, ""])[1]
        sources = [source for source, target in binds.items() if target.rstrip("/") == pin_dir.rstrip("/")]
        if check(sources, f"conntrackr.service: ProtectKernelTunables=yes and --pin-dir {pin_dir!r} is not bound from {BPFFS}"):
            check(sources[0].lstrip("-").startswith(BPFFS + "/"),
                  f"conntrackr.service: --pin-dir is bound from {sources[0]!r}, not a directory of {BPFFS}")
    else:
        check(BPFFS in (value("ReadWritePaths") or "").split(), f"conntrackr.service: {BPFFS} is not in ReadWritePaths")
    families = set((value("RestrictAddressFamilies") or "").split())
    check(families == FAMILIES, f"conntrackr.service: RestrictAddressFamilies is {sorted(families)}")
    check(" run " in f" {exec_start} " and "--config" in exec_start,
          "conntrackr.service: ExecStart is not run --config")
    check(value("WantedBy", "Install") == "multi-user.target", "conntrackr.service: not WantedBy=multi-user.target")


def check_containerfile(repo):
    text = open(os.path.join(repo, "Containerfile")).read()
    check(re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", text, re.M), "Containerfile: no ARG BASE_IMAGE default")
    check(re.search(r"^FROM \$\{?BASE_IMAGE\}?$", text, re.M), "Containerfile: FROM is not the BASE_IMAGE argument")
    check(re.search(r'^ENTRYPOINT \["conntrackr"\]$', text, re.M), "Containerfile: ENTRYPOINT is not conntrackr")
    check(re.search(r'^CMD \["run"\]$', text, re.M), "Containerfile: CMD is not run")
    check(not re.search(r"swift (build|package)|swiftlang|/opt/swift", text),
          "Containerfile: builds Swift in the image")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("--flags")
    args = parser.parse_args()
    flags = None
    if args.flags:
        flags = {line.strip() for line in open(args.flags) if line.strip()}
    config_text = open(os.path.join(args.repo, "deploy", "conntrackr.yaml")).read()
    try:
        check_config(config_text, flags)
        check_kubernetes(args.repo, config_text)
        check_unit(args.repo)
        check_containerfile(args.repo)
    except (OSError, yaml.YAMLError) as error:
        failures.append(f"cannot read the deployment files: {error}")
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        return 1
    print(f"manifests: {passed} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A `helm` stand-in backed by PyPI helm-python-sdk (the Helm v4 Go library): there is no helm
binary on these machines. Run it with the venv that `hack/install-helm.sh` prints.

  helm.py template RELEASE CHART [-f values.yaml]... [--set k=v]... [-n NS]
                   [--kube-version v1.20.2] [--api-versions group/version]... [--notes]
  helm.py lint CHART [-f values.yaml]... [--kube-version v1.30.0] [--strict]
  helm.py install RELEASE CHART [-f values.yaml]... [--set k=v]... [-n NS] [--create-namespace]
                  [--wait] [--timeout 5m0s] [--skip-crds]
  helm.py upgrade RELEASE CHART [same as install] [--install] [--reuse-values] [--reset-values]
  helm.py uninstall RELEASE [-n NS] [--wait] [--timeout 5m0s] [--keep-history]
  helm.py test RELEASE [-n NS] [--timeout 5m0s]
  helm.py status RELEASE [-n NS]
  helm.py version

`--kube-version` and `--api-versions` set `.Capabilities` as `helm template` does (the SDK's
Python wrapper does not expose them, its native options do). Offline, `.Capabilities.APIVersions`
is Helm's fixed list of every built-in group/version plus `--api-versions`, so templates pick
API versions by the kube version as well (see the chart's `_helpers.tpl`). `lookup` returns
nothing offline. `--notes` prints the rendered NOTES.txt instead of the manifests.
Exit status 1 with `Error: ...` on stderr for a values, schema or template error.

The release commands talk to the cluster of `KUBECONFIG` (or `--kubeconfig`) as the helm CLI
does: releases are stored as Secrets in the release namespace, `-n` defaults to the kubeconfig
context's namespace, `--wait` waits with Helm 4's watcher (kstatus: Deployments available, pods
ready, ...) up to `--timeout`, and what they print follows the CLI (NAME, NAMESPACE, STATUS,
REVISION, NOTES). `test` cannot show the test pods' logs here (the kubelet of the development
node serves no logs API): it reports each test hook's phase.
"""
import argparse
import json
import os
import re
import sys

import helm_python as helm
from helm_python import _native


def deep_merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            deep_merge(a[k], v)
        else:
            a[k] = v
    return a


def load_values(files, sets=()):
    vals = {}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            deep_merge(vals, helm.values_from_yaml(fh.read()) or {})
    for s in sets:
        deep_merge(vals, helm.parse_set_string(s))
    return vals


def render(chart_dir, vals, release, namespace, kube_version=None, api_versions=()):
    opts = {"name": release, "namespace": namespace, "is_install": True}
    if kube_version:
        opts["kube_version"] = kube_version
    if api_versions:
        opts["api_versions"] = list(api_versions)
    with helm.Chart.load(chart_dir) as chart:
        # The wrapper's render() drops kube_version/api_versions; call the native entry point
        # with the same arguments it uses.
        out = _native.call_string("helm_render", chart._raw(), json.dumps(vals), json.dumps(opts))
    return json.loads(out)


def duration(text):
    """Seconds of a Go duration as the helm CLI takes it (`5m0s`, `300s`, `90`)."""
    if re.fullmatch(r"\d+", text):
        return int(text)
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 5m0s, 300s)")
    h, mi, se = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + se


def context_namespace(kubeconfig):
    """The namespace of the kubeconfig's current context, as `helm -n` defaults to."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] \
        or os.path.expanduser("~/.kube/config")
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = helm.values_from_yaml(fh.read()) or {}
    except OSError:
        return "default"
    for c in cfg.get("contexts") or []:
        if c.get("name") == cfg.get("current-context"):
            return (c.get("context") or {}).get("namespace") or "default"
    return "default"


def print_release(rel, notes=True):
    print(f"NAME: {rel['name']}")
    if rel.get("deployed_at"):
        print(f"LAST DEPLOYED: {rel['deployed_at']}")
    print(f"NAMESPACE: {rel['namespace']}")
    print(f"STATUS: {rel['status']}")
    print(f"REVISION: {rel['revision']}")
    if notes and rel.get("notes"):
        print("NOTES:")
        print(rel["notes"].rstrip())


def release_action(a):
    kubeconfig = a.kubeconfig or None
    ns = a.namespace or context_namespace(kubeconfig)
    with helm.Config(kubeconfig_path=kubeconfig, namespace=ns) as cfg:
        if a.cmd in ("install", "upgrade"):
            vals = load_values(a.values, a.set)
            wait = "watcher" if a.wait else None
            if a.cmd == "upgrade" and a.install and not cfg.list(name_filter=f"^{re.escape(a.release)}$"):
                a.cmd = "install"
            if a.cmd == "install":
                rel = cfg.install(a.chart, a.release, vals, namespace=ns, timeout=a.timeout, wait=wait,
                                  create_namespace=a.create_namespace) if not a.skip_crds else \
                    json.loads(_native.call_string(
                        "helm_install", cfg._raw(), _native.HANDLE(0), _native.HANDLE(0), a.chart,
                        a.release, json.dumps(vals), json.dumps({
                            "namespace": ns, "timeout_seconds": a.timeout, "wait": wait,
                            "create_namespace": a.create_namespace or None, "skip_crds": True})))
            else:
                rel = cfg.upgrade(a.chart, a.release, vals, namespace=ns, timeout=a.timeout, wait=wait,
                                  reuse_values=a.reuse_values, reset_values=a.reset_values)
            print_release(rel)
        elif a.cmd == "uninstall":
            cfg.uninstall(a.release, timeout=a.timeout, wait="watcher" if a.wait else None,
                          keep_history=a.keep_history)
            print(f'release "{a.release}" uninstalled')
        elif a.cmd == "status":
            print_release(cfg.status(a.release))
        elif a.cmd == "test":
            result = cfg.test(a.release, timeout=a.timeout)
            print_release(result.get("release") or cfg.status(a.release), notes=False)
            hooks = [h for h in (cfg.get_all(a.release).get("hooks") or [])
                     if "test" in (h.get("events") or [])]
            for h in hooks:
                run = h.get("last_run") or {}
                print(f"TEST SUITE:     {h.get('name')}")
                print(f"Last Started:   {run.get('started_at', '')}")
                print(f"Last Completed: {run.get('completed_at', '')}")
                print(f"Phase:          {run.get('phase', '')}")
            if not hooks:
                print("TEST SUITE: None")
    return 0


def main():
    p = argparse.ArgumentParser(prog="helm")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("template")
    t.add_argument("release")
    t.add_argument("chart")
    t.add_argument("-f", "--values", action="append", default=[])
    t.add_argument("--set", action="append", default=[])
    t.add_argument("-n", "--namespace", default="default")
    t.add_argument("--kube-version")
    t.add_argument("--api-versions", action="append", default=[])
    t.add_argument("--notes", action="store_true")
    lint = sub.add_parser("lint")
    lint.add_argument("chart")
    lint.add_argument("-f", "--values", action="append", default=[])
    lint.add_argument("--set", action="append", default=[])
    lint.add_argument("--kube-version")
    lint.add_argument("--strict", action="store_true")
    rel_common = argparse.ArgumentParser(add_help=False)
    rel_common.add_argument("-n", "--namespace")
    rel_common.add_argument("--kubeconfig")
    rel_common.add_argument("--timeout", type=duration, default=300)
    for cmd in ("install", "upgrade"):
        c = sub.add_parser(cmd, parents=[rel_common])
        c.add_argument("release")
        c.add_argument("chart")
        c.add_argument("-f", "--values", action="append", default=[])
        c.add_argument("--set", action="append", default=[])
        c.add_argument("--wait", action="store_true")
        c.add_argument("--create-namespace", action="store_true")
        c.add_argument("--skip-crds", action="store_true")
        if cmd == "upgrade":
            c.add_argument("-i", "--install", action="store_true")
            c.add_argument("--reuse-values", action="store_true")
            c.add_argument("--reset-values", action="store_true")
    u = sub.add_parser("uninstall", parents=[rel_common])
    u.add_argument("release")
    u.add_argument("--wait", action="store_true")
    u.add_argument("--keep-history", action="store_true")
    for cmd in ("test", "status"):
        sub.add_parser(cmd, parents=[rel_common]).add_argument("release")
    sub.add_parser("version")
    a = p.parse_args()

    if a.cmd == "version":
        print(f"helm-sdk {helm.helm_sdk_version()} (helm-c {helm.helm_c_version()})")
        return 0
    try:
        if a.cmd in ("install", "upgrade", "uninstall", "test", "status"):
            return release_action(a)
        vals = load_values(a.values, a.set)
        if a.cmd == "template":
            out = render(a.chart, vals, a.release, a.namespace, a.kube_version, a.api_versions)
            if a.notes:
                for path in sorted(out):
                    if path.endswith("NOTES.txt"):
                        print(out[path])
                return 0
            for path in sorted(out):
                if path.endswith("NOTES.txt") or not out[path].strip():
                    continue
                print(f"---\n# Source: {path}\n{out[path].rstrip()}")
            return 0
        opts = {"strict": a.strict}
        if a.kube_version:
            opts["kube_version"] = a.kube_version
        r = helm.lint(a.chart, vals or None, **opts)
    except (helm.HelmError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    names = {1: "INFO", 2: "WARNING", 3: "ERROR"}
    for m in r["messages"]:
        print(f"[{names.get(m['severity'], m['severity'])}] {m['path']}: {m['error']}")
    print(f"{r['total_charts_linted']} chart(s) linted, {len(r['errors'])} chart(s) failed")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

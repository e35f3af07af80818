#!/usr/bin/env python3
"""A `helm template` / `helm lint` stand-in backed by PyPI helm-python-sdk (the Helm v4 Go
library): there is no helm binary on these machines. Run it with the venv that
`hack/install-helm.sh` prints.

  helm.py template RELEASE CHART [-f values.yaml]... [--set k=v]... [-n NS]
                   [--kube-version v1.20.2] [--api-versions group/version]... [--notes]
  helm.py lint CHART [-f values.yaml]... [--kube-version v1.30.0] [--strict]
  helm.py version

`--kube-version` and `--api-versions` set `.Capabilities` as `helm template` does (the SDK's
Python wrapper does not expose them, its native options do). Offline, `.Capabilities.APIVersions`
is Helm's fixed list of every built-in group/version plus `--api-versions`, so templates pick
API versions by the kube version as well (see the chart's `_helpers.tpl`). `lookup` returns
nothing offline. `--notes` prints the rendered NOTES.txt instead of the manifests.
Exit status 1 with `Error: ...` on stderr for a values, schema or template error.
"""
import argparse
import json
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
    sub.add_parser("version")
    a = p.parse_args()

    if a.cmd == "version":
        print(f"helm-sdk {helm.helm_sdk_version()} (helm-c {helm.helm_c_version()})")
        return 0
    try:
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
    except helm.HelmError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    names = {1: "INFO", 2: "WARNING", 3: "ERROR"}
    for m in r["messages"]:
        print(f"[{names.get(m['severity'], m['severity'])}] {m['path']}: {m['error']}")
    print(f"{r['total_charts_linted']} chart(s) linted, {len(r['errors'])} chart(s) failed")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

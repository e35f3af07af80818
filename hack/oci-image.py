#!/usr/bin/env python3
"""A single-layer OCI image archive from a directory, with no registry and no base image
download (from ../shared/recipes/oci-image.py). Import it with `ctr -n k8s.io images import`.

  oci-image.py ROOTFS_DIR REF OUT.tar [--env K=V]... [--user UID:GID] [--workdir DIR]
               [--entrypoint '["/bin/x", "arg"]']

Give the full reference (ghcr.io/..., docker.io/...): the kubelet asks containerd for the
normalised name. The layer is reproducible (sorted entries, zero mtimes, numeric owners as they
are in ROOTFS_DIR), so the same files give the same image digest. The layer is written to a
temporary file, not held in memory: the OpenClaw runtime is about 700 MB."""
import argparse, hashlib, io, json, os, tarfile, tempfile

p = argparse.ArgumentParser()
p.add_argument("root"); p.add_argument("ref"); p.add_argument("out")
p.add_argument("--env", action="append", default=[])
p.add_argument("--user"); p.add_argument("--workdir")
p.add_argument("--entrypoint", type=json.loads, help="a JSON array, as in a Dockerfile")
a = p.parse_args()

def reset(ti):
    ti.mtime = 0
    ti.uname = ti.gname = ""
    return ti

def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), os.path.getsize(path)

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(a.out)), delete=False) as tmp:
    layer_path = tmp.name
try:
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as t:
        for dp, dns, fns in os.walk(a.root):
            dns.sort()
            for n in sorted(dns + fns):
                path = os.path.join(dp, n)
                t.add(path, arcname=os.path.relpath(path, a.root), recursive=False, filter=reset)
    layer_digest, layer_size = sha_file(layer_path)
    env = dict(e.split("=", 1) for e in ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env)
    cfg = {"Env": [f"{k}={v}" for k, v in env.items()]}
    if a.entrypoint: cfg["Entrypoint"] = a.entrypoint
    if a.user: cfg["User"] = a.user
    if a.workdir: cfg["WorkingDir"] = a.workdir
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}, sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]},
        sort_keys=True).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": a.ref, "org.opencontainers.image.ref.name": a.ref.rsplit(":", 1)[-1]}}]}).encode()
    with tarfile.open(a.out, "w") as t:
        def add(name, data):
            ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        t.add(layer_path, arcname="blobs/sha256/" + layer_digest.split(":")[1], filter=reset)
        for blob in (config, manifest):
            add("blobs/sha256/" + digest(blob).split(":")[1], blob)
    print(digest(manifest))
finally:
    os.unlink(layer_path)

#!/usr/bin/env python3
"""Writes countersign's image as an OCI image layout archive, without a container engine.

    oci.py ROOTFS ARCHIVE --ref REPO:TAG --epoch SECONDS --label K=V ...
           [--entrypoint PATH --cmd ARG ... --user UID:GID --workdir DIR]

One layer (ROOTFS as a gzip'd tar), the image config (by default that of the Dockerfile's
final stage: user 65532, entrypoint /usr/local/bin/countersign, command serve, the OCI
labels; tests/cluster/node/build writes the node's pause image with other values), its manifest,
and index.json naming it REPO:TAG (org.opencontainers.image.ref.name as the tag, and
io.containerd.image.name as the whole reference, so `ctr images import` names it).
Deterministic: entries sorted, every time SECONDS, owners numeric, gzip without a name or a
time; so one ROOTFS and one SECONDS always give the same manifest digest. Prints that digest.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import time

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def owner(path_in_image):
    """nonroot's home is nonroot's; everything else is root's."""
    return 65532 if path_in_image == "home/nonroot" else 0


def layer_tar(rootfs, epoch):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for directory, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs + files):
                full = os.path.join(directory, name)
                entries.append(os.path.relpath(full, rootfs))
        for relative in sorted(entries):
            full = os.path.join(rootfs, relative)
            info = tar.gettarinfo(full, arcname=relative)
            info.mtime = epoch
            info.uid = info.gid = owner(relative)
            info.uname = info.gname = ""
            info.pax_headers = {}
            info.mode = stat.S_IMODE(os.lstat(full).st_mode)
            if info.isreg():
                with open(full, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return out.getvalue()


def gzipped(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as z:
        z.write(data)
    return out.getvalue()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rootfs")
    parser.add_argument("archive")
    parser.add_argument("--ref", required=True)
    parser.add_argument("--epoch", type=int, required=True)
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--entrypoint", default="/usr/local/bin/countersign")
    parser.add_argument("--cmd", action="append")
    parser.add_argument("--user", default="65532:65532")
    parser.add_argument("--workdir", default="/home/nonroot")
    parser.add_argument("--path", default="/usr/local/bin")
    args = parser.parse_args()
    command = ["serve"] if args.cmd is None else [c for c in args.cmd if c]

    tar = layer_tar(args.rootfs, args.epoch)
    layer = gzipped(tar)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(args.epoch))
    labels = dict(label.split("=", 1) for label in args.label)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": args.user,
            "Entrypoint": [args.entrypoint],
            "Cmd": command,
            "WorkingDir": args.workdir,
            "Env": ["PATH=" + args.path],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
        "history": [{"created": created, "created_by": "tests/image/build (image/rootfs)"}],
    }
    config_blob = canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": digest(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": digest(layer), "size": len(layer)}],
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_blob = canonical(manifest)
    repository, tag = args.ref.rsplit(":", 1)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": digest(manifest_blob),
                "size": len(manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "org.opencontainers.image.ref.name": tag,
                    "io.containerd.image.name": args.ref,
                },
            }
        ],
    }
    files = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical(index),
    }
    for blob in (layer, config_blob, manifest_blob):
        files["blobs/sha256/" + digest(blob).split(":", 1)[1]] = blob
    with tarfile.open(args.archive, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, args.epoch
            archive.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, args.epoch
            archive.addfile(info, io.BytesIO(files[name]))
    print(digest(manifest_blob))


if __name__ == "__main__":
    sys.exit(main())

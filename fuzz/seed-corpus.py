#!/usr/bin/env python3
"""Seed fuzz/corpus/ for the writing targets (the corpus is not committed):

  qcow2_write    a few fresh-image scripts, and whole qcow2 files made by qemu-img / qemu-io
                 (512 B and 4 KiB clusters, zero and compressed clusters, a v2 image) wrapped in
                 the "fuzzed image" framing the target decodes
  seedvol_write  random byte strings (the target builds trees from any bytes)
  ext4_edit      a 64-byte edit script followed by mkfs.ext4 images (kiln's committed
                 fixtures/mke2fs.conf and the host default) with their all-zero tail cut off
  vfat_edit      a 32-byte edit script followed by mkfs.fat FAT12/16/32 images holding a few
                 files and a directory (mcopy, mmd), their all-zero tail cut off

Run from fuzz/:  python3 seed-corpus.py   (needs qemu-img, qemu-io, mkfs.ext4, mkfs.fat, mtools)
"""

import os
import random
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
rng = random.Random(1)


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def run(*cmd, env=None):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)


def qcow2_framed(image, ops):
    """Unstructured: ratio(1, 4) <- 0x00 (true); int_in_range(0..=remaining) <- 3 big-endian bytes."""
    remaining = 3 + len(image) + len(ops)
    assert len(image) < 1 << 24 and remaining < 1 << 24
    return bytes([0, len(image) >> 16 & 0xFF, len(image) >> 8 & 0xFF, len(image) & 0xFF]) + image + ops


with tempfile.TemporaryDirectory() as tmp:
    # qcow2_write: fresh-image scripts
    for i in range(8):
        put("qcow2_write", f"fresh-{i}", bytes([1 + i % 3]) + rng.randbytes(rng.randint(16, 600)))
    # qcow2_write: qemu-made images
    specs = [
        ("c512", ["-o", "cluster_size=512"], "256K", ["write -P 0x11 0 3000", "write -z 4096 4096"]),
        ("c4k", ["-o", "cluster_size=4096"], "1M", ["write -P 0x22 8192 20000", "write -z 65536 8192"]),
        ("c64k", [], "256K", ["write -P 0x33 0 1000"]),
        ("v2", ["-o", "compat=0.10,cluster_size=4096"], "256K", ["write -P 0x44 0 5000"]),
        ("empty", ["-o", "cluster_size=1024"], "128K", []),
    ]
    for name, opts, size, writes in specs:
        img = os.path.join(tmp, name + ".qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", *opts, img, size)
        for w in writes:
            run("qemu-io", "-c", w, img)
        data = open(img, "rb").read()
        for j in range(2):
            put("qcow2_write", f"qemu-{name}-{j}", qcow2_framed(data, rng.randbytes(200)))
    # a compressed image
    raw = os.path.join(tmp, "raw")
    with open(raw, "wb") as f:
        f.write(b"kiln" * 16384 + bytes(65536) + rng.randbytes(8192))
    comp = os.path.join(tmp, "comp.qcow2")
    run("qemu-img", "convert", "-q", "-c", "-O", "qcow2", "-o", "cluster_size=4096", raw, comp)
    put("qcow2_write", "qemu-compressed", qcow2_framed(open(comp, "rb").read(), rng.randbytes(200)))

    # seedvol_write
    for i in range(16):
        put("seedvol_write", f"rand-{i}", rng.randbytes(rng.randint(8, 2000)))

    # ext4_edit
    conf = os.path.join(HERE, "..", "fixtures", "mke2fs.conf")
    variants = [
        ("kiln-conf", {"MKE2FS_CONFIG": conf}, ["-b", "1024"], "256K"),
        ("kiln-conf-4k", {"MKE2FS_CONFIG": conf}, [], "1M"),
        ("default", {}, [], "256K"),
        ("ext2", {}, ["-t", "ext2"], "256K"),
    ]
    for name, extra_env, args, size in variants:
        img = os.path.join(tmp, name + ".img")
        env = dict(os.environ, E2FSPROGS_FAKE_TIME="1700000000", **extra_env)
        run("mkfs.ext4", "-q", "-F", "-U", "clear", "-E", "hash_seed=00000000-0000-0000-0000-000000000000",
            *args, img, size, env=env)
        data = open(img, "rb").read().rstrip(b"\0")
        for j in range(2):
            put("ext4_edit", f"{name}-{j}", rng.randbytes(64) + data)

    # vfat_edit
    files = os.path.join(tmp, "cmdline.txt")
    with open(files, "w") as f:
        f.write("console=tty1 root=LABEL=writable rootwait\n")
    mtools_env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for name, args, kib in [
        ("fat12", ["-F", "12"], 512),
        ("fat16", ["-F", "16", "-s", "1"], 4096),
        ("fat32", ["-F", "32", "-s", "1"], 34816),
    ]:
        img = os.path.join(tmp, name + ".img")
        run("mkfs.fat", "-C", "-i", "1234abcd", "-n", "SYSTEM-BOOT", *args, img, str(kib))
        run("mcopy", "-i", img, files, "::/cmdline.txt", env=mtools_env)
        run("mmd", "-i", img, "::/overlays", env=mtools_env)
        data = open(img, "rb").read().rstrip(b"\0")
        for j in range(2):
            put("vfat_edit", f"{name}-{j}", rng.randbytes(32) + data)

print("seeded", CORPUS)

#!/usr/bin/env python3
"""Oracle for kiln-seedvol: open an ISO with pycdlib and compare it with a directory tree.

usage: check_iso.py IMAGE EXPECTED_DIR VOLUME_ID

Every file and directory below EXPECTED_DIR must appear under the same path both through
Rock Ridge and through Joliet, with the same contents (files) and, through Rock Ridge, the same
permission bits; no extra entries may exist. The plain ISO 9660 hierarchy must hold the same
files under their mangled names. Prints "ok N files M dirs" and exits 0 on success,
prints the first mismatch and exits 1 otherwise.
"""

import io
import os
import stat
import sys

import pycdlib


def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)


def read(iso, **kw):
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, **kw)
    return buf.getvalue()


def children(iso, **kw):
    names = set()
    for child in iso.list_children(**kw):
        if child.is_dot() or child.is_dotdot():
            continue
        if "rr_path" in kw:
            names.add(child.rock_ridge.name().decode("utf-8"))
        else:
            names.add(child.file_identifier().decode("utf-16-be"))
    return names


def main():
    image, expected, volume_id = sys.argv[1], sys.argv[2], sys.argv[3]
    iso = pycdlib.PyCdlib()
    iso.open(image)
    if not iso.has_rock_ridge():
        fail("no Rock Ridge")
    if not iso.has_joliet():
        fail("no Joliet")
    pvd_id = iso.pvd.volume_identifier.decode("ascii").rstrip(" ")
    if pvd_id != volume_id:
        fail("volume id %r != %r" % (pvd_id, volume_id))
    files = dirs = 0
    for root, dnames, fnames in os.walk(expected):
        rel = os.path.relpath(root, expected)
        iso_dir = "/" if rel == "." else "/" + rel
        want = set(dnames) | set(fnames)
        for ns in ("rr_path", "joliet_path"):
            got = children(iso, **{ns: iso_dir})
            if got != want:
                fail("%s %s: children %s != %s" % (ns, iso_dir, sorted(got), sorted(want)))
        for d in dnames:
            dirs += 1
            path = iso_dir.rstrip("/") + "/" + d
            rec = iso.get_record(rr_path=path)
            mode = rec.rock_ridge.get_file_mode()
            want_mode = os.stat(os.path.join(root, d)).st_mode
            if not stat.S_ISDIR(mode) or stat.S_IMODE(mode) != stat.S_IMODE(want_mode):
                fail("%s: mode %o != %o" % (path, mode, want_mode))
        for f in fnames:
            files += 1
            path = iso_dir.rstrip("/") + "/" + f
            with open(os.path.join(root, f), "rb") as fh:
                data = fh.read()
            if read(iso, rr_path=path) != data:
                fail("rr %s: contents differ" % path)
            if read(iso, joliet_path=path) != data:
                fail("joliet %s: contents differ" % path)
            rec = iso.get_record(rr_path=path)
            mode = rec.rock_ridge.get_file_mode()
            want_mode = os.stat(os.path.join(root, f)).st_mode
            if not stat.S_ISREG(mode) or stat.S_IMODE(mode) != stat.S_IMODE(want_mode):
                fail("%s: mode %o != %o" % (path, mode, want_mode))
    # The plain ISO 9660 hierarchy (level-1 names) must hold the same files: walk it, map each
    # identifier to its Rock Ridge name, and compare contents.
    rr_of = {"/": "/"}
    plain_files = 0
    for dirpath, dnames, fnames in iso.walk(iso_path="/"):
        base = rr_of[dirpath]
        for name in dnames + fnames:
            ipath = dirpath.rstrip("/") + "/" + name
            rec = iso.get_record(iso_path=ipath)
            rpath = base.rstrip("/") + "/" + rec.rock_ridge.name().decode("utf-8")
            if name in dnames:
                rr_of[ipath] = rpath
                continue
            plain_files += 1
            with open(os.path.join(expected, rpath.lstrip("/")), "rb") as fh:
                if read(iso, iso_path=ipath) != fh.read():
                    fail("iso9660 %s (%s): contents differ" % (ipath, rpath))
    if plain_files != files:
        fail("iso9660 hierarchy has %d files, expected %d" % (plain_files, files))
    iso.close()
    print("ok %d files %d dirs" % (files, dirs))


if __name__ == "__main__":
    main()

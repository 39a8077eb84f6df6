#!/usr/bin/env python3
"""Writes a `nix-store --export` stream of N synthetic store paths to standard output.

    synthetic.py N [--seed S] [--suffix X] [--first I]

Path i (for i in [I, I+N), I = 0 by default) is /nix/store/<hash>-synth-<i><X>, its hash the first
160 bits of sha256("<S>:<i>:<X>") in Nix's base-32. Its tree is a directory of 1-4 small files
(50-2000 bytes, about a third executable; about 1 in 5 drawn verbatim from a pool of contents that
many paths share) and, one time in eight, a symlink to one of them. It refers to 0-3 earlier
paths (and, one time in ten, to itself), so the stream is references first; each path's
references exist in the stream, or, with --first I, among the paths before I of the same seed
and suffix (`synthetic.py 1 --first N` is the path that comes after a store of N).

Everything is derived from (S, X, i), so the same arguments give the same bytes, and nothing is
kept from one path to the next: memory is constant and about 10k paths/s are written (1M
paths, about 3 GB, take about a minute and a half).
"""

import argparse
import hashlib
import random
import struct
import sys

B32 = "0123456789abcdfghijklmnpqrsvwxyz"
POOL_SIZE = 64


def nix_base32(digest):
    """Nix's base-32 of the 20 bytes `digest` (the last byte's low bits first, as Nix prints)."""
    n = int.from_bytes(digest, "little")
    return "".join(B32[(n >> (5 * k)) & 31] for k in range(31, -1, -1))


def token(b):
    return struct.pack("<Q", len(b)) + b + b"\0" * (-len(b) % 8)


T = {w: token(w) for w in (b"nix-archive-1", b"(", b")", b"type", b"regular", b"directory",
                           b"symlink", b"target", b"executable", b"", b"contents", b"entry",
                           b"name", b"node")}
NAR_START = T[b"nix-archive-1"] + T[b"("] + T[b"type"] + T[b"directory"]
ENTRY_OPEN = T[b"entry"] + T[b"("] + T[b"name"]
NODE_FILE = T[b"node"] + T[b"("] + T[b"type"] + T[b"regular"]
EXEC = T[b"executable"] + T[b""]
CONTENTS = T[b"contents"]
CLOSE2 = T[b")"] + T[b")"]  # the node's, then the entry's
SYMLINK = T[b"node"] + T[b"("] + T[b"type"] + T[b"symlink"] + T[b"target"]
CLOSE = T[b")"]
ONE = struct.pack("<Q", 1)
NIXE = struct.pack("<Q", 0x4558494E)
ZERO = struct.pack("<Q", 0)
NAMES = [b"bin-%d" % k for k in range(4)], [b"lib-%d.so" % k for k in range(4)], [b"share-%d.txt" % k for k in range(4)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--suffix", default="")
    ap.add_argument("--first", type=int, default=0)
    a = ap.parse_args()
    seed, suffix, first = a.seed, a.suffix, a.first

    def path_of(i):
        h = hashlib.sha256(b"%d:%d:%s" % (seed, i, suffix.encode())).digest()[:20]
        return ("/nix/store/%s-synth-%d%s" % (nix_base32(h), i, suffix)).encode()

    rnd = random.Random("%d:%s" % (seed, suffix))
    pool = [rnd.randbytes(rnd.randint(50, 2000)) for _ in range(POOL_SIZE)]
    noise = rnd.randbytes(1 << 20)
    out = sys.stdout.buffer
    buf = []
    for i in range(first, first + a.n):
        r = random.Random(hashlib.sha256(b"r:%d:%d:%s" % (seed, i, suffix.encode())).digest())
        path = path_of(i)
        nfiles = r.randint(1, 4)
        entries = []
        for k in range(nfiles):
            kind = r.randrange(3)
            name = NAMES[kind][k]
            if r.random() < 0.2:
                data = pool[r.randrange(POOL_SIZE)]
            else:
                # Unique: the path and file name, then bytes from a random place of the noise.
                n = r.randint(50, 2000)
                head = b"%s/%s\n" % (path, name)
                off = r.randrange(len(noise) - n)
                data = (head + noise[off:off + n])[:n]
            entries.append((name, kind == 0 or r.random() < 0.1, data))
        if r.random() < 0.125:
            entries.append((b"link", None, entries[0][0]))
        entries.sort()
        nar = [NAR_START]
        for name, executable, data in entries:
            nar.append(ENTRY_OPEN)
            nar.append(token(name))
            if executable is None:
                nar.append(SYMLINK)
                nar.append(token(data))
            else:
                nar.append(NODE_FILE)
                if executable:
                    nar.append(EXEC)
                nar.append(CONTENTS)
                nar.append(token(data))
            nar.append(CLOSE2)
        nar.append(CLOSE)
        refs = set()
        if i > 0:
            for _ in range(r.randint(0, 3)):
                refs.add(path_of(r.randrange(i)))
        if r.random() < 0.1:
            refs.add(path)
        rec = [ONE, *nar, NIXE, token(path), struct.pack("<Q", len(refs))]
        rec.extend(token(p) for p in sorted(refs))
        rec.append(ZERO)  # no deriver: the empty string
        rec.append(ZERO)  # no signature
        buf.extend(rec)
        if len(buf) > 8192:
            out.write(b"".join(buf))
            buf.clear()
    buf.append(ZERO)
    out.write(b"".join(buf))
    out.flush()


if __name__ == "__main__":
    main()

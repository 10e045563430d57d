#!/usr/bin/env python3
"""Where the bytes of an echolog data directory go (the profile of the disk target).

Usage: benches/disk_bytes.py DATA_DIR   (needs the `zstandard` package: pip install zstandard)

Reads a closed store (no server running on it) and prints, as bytes and as a ratio to the raw
events (the records' decompressed bytes, what `Stats.raw_bytes` counts):
- segments: block headers and compressed bodies;
- index files, by section (docs/format.md, "Index file");
- cluster files: block headers, the compressed bodies, and within the bodies the share of the
  per-record seq lists against the records, each compressed alone with zstd level 1 in 64 KiB
  pieces (an estimate of what each part costs, since the shipped bodies compress them together),
  and the seq columns' bytes before compression; the directory, and its parts (either layout:
  format version 7, or 3 to 6);
- what the records alone compress to at zstd levels 1, 3, 6 and 9 in 64 KiB and 256 KiB blocks,
  in seq order (one segment) and in (entity, seq) order (one cluster file): the floor that any
  single copy of the data sits on before a byte of index.

Only file headers are trusted to the extent needed to walk the blocks; nothing is written.
"""

import os
import struct
import sys

import zstandard

SECTION_NAMES = {
    1: "blocks",
    2: "ts",
    3: "entities",
    4: "kinds",
    5: "tags",
    6: "minutes",
    7: "ids",
    8: "summary",
    9: "tag hours",
}
BLOCK_HEADER = struct.Struct("<I4sIIQIBBHqq")
CLUSTER_HEADER = struct.Struct("<I8sIQQQIIQQ")


def blocks(data, pos, end):
    """(header bytes, body bytes, decompressed body, record count) of each block."""
    dctx = zstandard.ZstdDecompressor()
    while pos + BLOCK_HEADER.size <= end:
        (_crc, magic, body_len, raw_len, _first, count, codec, _flags, _r, _lo, _hi) = (
            BLOCK_HEADER.unpack_from(data, pos)
        )
        if magic != b"EBLK":
            raise ValueError(f"no block at offset {pos}")
        body = data[pos + BLOCK_HEADER.size : pos + BLOCK_HEADER.size + body_len]
        raw = dctx.decompress(body, max_output_size=raw_len) if codec == 1 else body
        yield BLOCK_HEADER.size, body_len, raw, count
        pos += BLOCK_HEADER.size + body_len


def varints_len(raw, count):
    """Bytes taken by the first `count` varints of `raw` (a version 7 seq column)."""
    pos = 0
    for _ in range(count):
        while raw[pos] & 0x80:
            pos += 1
        pos += 1
    return pos


def directory_parts(data, dir_off, version, block_count):
    """(part, bytes) of a cluster directory (docs/format.md, "Cluster file")."""
    (entity_count,) = struct.unpack_from("<I", data, dir_off + 4)
    if version >= 7:
        restarts = (entity_count + 15) // 16 * 16
        (entries,) = struct.unpack_from("<Q", data, dir_off + 8)
        return [("prefix", 16), ("block table", 32 * block_count), ("restarts", restarts),
                ("entries", entries)]
    table, fixed = 24 * block_count, 20 * entity_count
    dir_len = struct.unpack_from("<Q", data, 56)[0]
    return [("prefix", 8), ("block table", table), ("entries", fixed),
            ("names", dir_len - 8 - table - fixed)]


def compressed(data, level=1, piece=64 << 10):
    cctx = zstandard.ZstdCompressor(level=level)
    return sum(len(cctx.compress(data[i : i + piece])) for i in range(0, len(data), piece))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    totals = {}
    raw_events = 0
    seq_sample = b""
    entity_sample = b""

    def add(what, n):
        totals[what] = totals.get(what, 0) + n

    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        data = open(path, "rb").read()
        if name.endswith(".seg"):
            add("segments: file headers", 32)
            records = []
            for head, body, raw, _count in blocks(data, 32, len(data)):
                add("segments: block headers", head)
                add("segments: compressed bodies", body)
                raw_events += len(raw)
                records.append(raw)
            if not seq_sample and len(data) > 16 << 20:
                seq_sample = b"".join(records)
        elif name.endswith(".idx"):
            (count,) = struct.unpack_from("<I", data, 12)
            add("index: header and section table", 64 + 24 * count + 4)
            for i in range(count):
                sid, _crc, _off, length = struct.unpack_from("<IIQQ", data, 64 + 24 * i)
                add(f"index: {SECTION_NAMES.get(sid, sid)}", length)
        elif name.endswith(".clu"):
            (_crc, magic, version, _base, _end, _rc, _lvl, block_count, dir_off, dir_len) = (
                CLUSTER_HEADER.unpack_from(data, 0)
            )
            if magic != b"ECHOCLUS":
                raise ValueError(f"{name}: not a cluster file")
            add("cluster: file headers", 64)
            add("cluster: directory", dir_len)
            for part, n in directory_parts(data, dir_off, version, block_count):
                add(f"cluster: directory, {part} (of it)", n)
            seqs, recs = [], []
            for head, body, raw, count in blocks(data, 64, dir_off):
                add("cluster: block headers", head)
                add("cluster: compressed bodies", body)
                seq_len = varints_len(raw, count) if version >= 7 else 8 * count
                add("cluster: seq columns before compression", seq_len)
                seqs.append(raw[:seq_len])
                recs.append(raw[seq_len:])
            seqs, recs = b"".join(seqs), b"".join(recs)
            add("cluster (estimate): seq lists alone, zstd 1", compressed(seqs))
            add("cluster (estimate): records alone, zstd 1", compressed(recs))
            if len(recs) > len(entity_sample):
                entity_sample = recs
        elif name in ("TOMBSTONES", "CURSORS", "IDFILTER"):
            add("other files", len(data))
    if raw_events == 0:
        sys.exit(f"{root}: no segment data")
    on_disk = sum(
        v for k, v in totals.items()
        if "(estimate)" not in k and "(of it)" not in k and "before compression" not in k
    )
    print(f"raw events {raw_events} bytes; on disk {on_disk} bytes = {on_disk / raw_events:.4f}x")
    for what, n in totals.items():
        print(f"  {what:48s} {n:14d}  {n / raw_events:.4f}x")
    for label, sample in (("seq order", seq_sample), ("(entity, seq) order", entity_sample)):
        if not sample:
            continue
        for level in (1, 3, 6, 9):
            for piece in (64 << 10, 256 << 10):
                ratio = compressed(sample, level, piece) / len(sample)
                print(
                    f"  records in {label:20s} zstd {level} in {piece >> 10:3d} KiB pieces: "
                    f"{ratio:.4f}x of {len(sample)} bytes"
                )


if __name__ == "__main__":
    main()

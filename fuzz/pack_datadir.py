#!/usr/bin/env python3
"""Packs a data directory into one input for the `recovery` fuzz target (see src/lib.rs):
a flags byte, then per file [name length: u8][relative path][content length: u16 LE][content].

usage: pack_datadir.py DATA_DIR FLAGS > seed
"""
import os
import struct
import sys


def main() -> None:
    root, flags = sys.argv[1], int(sys.argv[2])
    out = bytearray([flags])
    for dirpath, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).encode()
            with open(path, "rb") as f:
                content = f.read()
            if len(rel) > 255 or len(content) > 0xFFFF:
                sys.exit(f"{path}: too long to pack")
            out += bytes([len(rel)]) + rel + struct.pack("<H", len(content)) + content
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()

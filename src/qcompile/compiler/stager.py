"""The write stage's file writer, run as a process of its own: ``python -I -S stager.py STAGING``.

Creating hundreds of files is kernel time. In its own process it runs on another core while the
build is still rendering; on a thread it would wait for the interpreter lock after every system
call and overlap almost nothing. Standard library only: it starts with -I -S, without qcompile or
site-packages on its path.

Reads records from stdin until EOF: a header (operation b"w" write or b"l" hard-link, file mode,
path size, payload size), the path relative to STAGING, then the payload: the file's content, or
for a link the path of the existing file to link. On the first failure it prints
``errno<TAB>message<TAB>path`` (an empty path: the staging directory itself) and exits with 1.
"""

from __future__ import annotations

import os
import struct
import sys

HEADER = struct.Struct("<cHII")
WRITE = b"w"
LINK = b"l"


def _place(staging: str, operation: bytes, mode: int, path: str, payload: bytes) -> None:
    target = os.path.join(staging, path)
    if operation == LINK:
        os.link(os.fsdecode(payload), target)  # keeps the inode and the mtime
        return
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(descriptor, mode)  # the mode asked for, whatever the umask
        view = memoryview(payload)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


def main(staging: str) -> int:
    stream = sys.stdin.buffer
    made = {staging}
    try:
        os.mkdir(staging)
    except OSError as error:
        print(f"{error.errno}\t{error.strerror}\t", flush=True)
        return 1
    while len(header := stream.read(HEADER.size)) == HEADER.size:
        operation, mode, path_size, payload_size = HEADER.unpack(header)
        path = os.fsdecode(stream.read(path_size))
        payload = stream.read(payload_size)
        try:
            parent = os.path.dirname(os.path.join(staging, path))
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            _place(staging, operation, mode, path, payload)
        except OSError as error:
            print(f"{error.errno}\t{error.strerror}\t{path}", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

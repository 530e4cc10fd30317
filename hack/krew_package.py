#!/usr/bin/env python3
"""Build the krew archive of `kubectl distillery` and print its sha256 (plugins/krew/distillery.yaml names both).

    python hack/krew_package.py OUT_DIR     # writes OUT_DIR/kubectl-distillery.tar.gz, prints its sha256

The archive holds the launcher plugins/krew/kubectl-distillery (it runs the plugin of the installed
Python package). It is byte-for-byte reproducible (fixed times, owners and modes, gzip without a
timestamp), so the manifest's sha256 can be checked by a test and the release uploads the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "plugins" / "krew" / "kubectl-distillery"
ARCHIVE = "kubectl-distillery.tar.gz"


def archive_bytes() -> bytes:
    content = LAUNCHER.read_bytes()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(LAUNCHER.name)
        info.size, info.mode, info.mtime = len(content), 0o755, 0
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    data = archive_bytes()
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / ARCHIVE).write_bytes(data)
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())

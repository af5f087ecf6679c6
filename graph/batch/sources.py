"""What a bulk job reads and what it already wrote: the pictures of a SOURCE, the keys done in DEST.

SOURCE is a folder (walked recursively), a manifest (``.parquet`` with a ``path`` column, or a text
file of one path a line), or one picture; a URI (``s3://``, ``gs://``...) goes through the pyarrow
filesystem installed for its scheme, as Ray Data itself reads it.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

TEXT_MANIFESTS = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class Location:
    """A path as a filesystem and the path inside it (no scheme)."""

    fs: pafs.FileSystem
    path: str


def locate(uri: str) -> Location:
    """A local path (made absolute) or a URI Ray Data reads."""
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return Location(fs, path)
    return Location(pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve()))


def _hidden(path: str, root: str) -> bool:
    return any(part.startswith(".") for part in posixpath.relpath(path, root).split("/"))


def _manifest_paths(source: Location) -> list[str]:
    if source.path.endswith(".parquet"):
        with source.fs.open_input_file(source.path) as fh:
            table = pq.read_table(fh, columns=["path"])
        lines = [p for p in table.column("path").to_pylist() if p]
    else:
        with source.fs.open_input_stream(source.path) as fh:
            text = fh.read().decode("utf-8")
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
    if not isinstance(source.fs, pafs.LocalFileSystem):
        return lines  # bucket/key paths on the manifest's own filesystem
    # Relative entries are relative to the manifest's folder.
    base = posixpath.dirname(source.path)
    return [posixpath.normpath(posixpath.join(base, p)) for p in lines]


def list_pictures(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem and the sorted picture paths of a SOURCE; hidden files and folders are left out of a folder walk.

    Raises:
        FileNotFoundError: the source does not exist.
    """
    source = locate(uri)
    info = source.fs.get_file_info(source.path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such folder, manifest or picture: {uri}")
    if info.type == pafs.FileType.Directory:
        found = source.fs.get_file_info(pafs.FileSelector(source.path, recursive=True))
        paths = [f.path for f in found if f.type == pafs.FileType.File and not _hidden(f.path, source.path)]
    elif source.path.endswith(".parquet") or source.path.endswith(TEXT_MANIFESTS):
        paths = _manifest_paths(source)
    else:
        paths = [source.path]
    return source.fs, sorted(set(paths))


def parquet_files(dest: Location) -> list[str]:
    """The parquet files under DEST (none when it does not exist yet)."""
    info = dest.fs.get_file_info(dest.path)
    if info.type != pafs.FileType.Directory:
        return []
    found = dest.fs.get_file_info(pafs.FileSelector(dest.path, recursive=True))
    return sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(".parquet"))


def read_rows(dest: Location, files: list[str], columns: list[str]):
    """Some columns of DEST's files as one table; a file that cannot be read (an interrupted write) is left out, with a warning."""
    readable = []
    for path in files:
        try:
            pq.read_metadata(path, filesystem=dest.fs)
            readable.append(path)
        except Exception as exc:  # a torn file: its pictures are simply done again
            logger.warning("an output file of DEST is unreadable (%s); its pictures are processed again: remove it", type(exc).__name__)
    if not readable:
        return None
    return pads.dataset(readable, filesystem=dest.fs, format="parquet").to_table(columns=columns)


def done_keys(dest: Location) -> frozenset[tuple[str, str]]:
    """(path, sha256) of every picture DEST already holds a row for."""
    table = read_rows(dest, parquet_files(dest), ["path", "sha256"])
    if table is None:
        return frozenset()
    return frozenset(zip(table.column("path").to_pylist(), table.column("sha256").to_pylist()))

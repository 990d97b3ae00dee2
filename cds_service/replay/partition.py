"""First pass: stream every NDJSON file of the export, shuffle its lines into per-patient-group spill files.

A file is read in chunks (byte ranges of a plain file, a whole ``.ndjson.gz``), one Dask task each; a task
keeps at most ``FLUSH_BYTES`` of lines in memory before it appends them to ``spill/gNNNNN/cNNNNN.ndjson``.
A patient's resources all land in one group (``group_of``: CRC-32 of the id, stable across processes), so the
second pass reads one group at a time and never the whole export. Each spill line is the patient id as a
JSON string, a tab, and the resource line exactly as exported.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from cds_service.replay.refs import patient_of

SUFFIXES = (".ndjson", ".ndjson.gz")
CHUNK_BYTES = 64 * 2**20  # a plain file is read in byte ranges of this size (one task each)
PARTITION_BYTES = 16 * 2**20  # uncompressed export bytes per patient group (the second pass's unit)
FLUSH_BYTES = 8 * 2**20  # lines a shuffle task holds before appending them to the spill files


class InputFolderError(Exception):
    """The input is not a folder of NDJSON files."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Lines of `path` that start at a byte offset in [start, end) (gzip: the whole file)."""

    index: int
    path: str
    start: int = 0
    end: int | None = None


@dataclass(slots=True)
class ChunkResult:
    chunk: Chunk
    lines: int = 0
    resources: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    unassigned: dict[str, int] = field(default_factory=dict)  # resource type -> resources with no patient
    problems: int = 0  # written to the chunk's problems file (line numbers within the chunk)


def input_files(folder: Path) -> list[Path]:
    """The export's NDJSON files (``*.ndjson``, ``*.ndjson.gz``), sorted by name."""
    if not folder.is_dir():
        raise InputFolderError(f"{folder} is not a folder (expected a Bulk Data export: *.ndjson files)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if not files:
        raise InputFolderError(f"no .ndjson or .ndjson.gz files in {folder}")
    return files


def uncompressed_size(path: Path) -> int:
    """A plain file's size; a gzip file's size from its trailer (ISIZE: exact below 4 GiB per member)."""
    size = path.stat().st_size
    if not path.name.endswith(".gz") or size < 4:
        return size
    with path.open("rb") as handle:
        handle.seek(-4, 2)
        (isize,) = struct.unpack("<I", handle.read(4))
    return max(int(isize), size)


def plan_chunks(files: list[Path], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    """One chunk per gzip file, byte ranges of at most `chunk_bytes` for plain files."""
    chunks: list[Chunk] = []
    for path in files:
        size = path.stat().st_size
        if path.name.endswith(".gz") or size <= chunk_bytes:
            chunks.append(Chunk(len(chunks), str(path)))
            continue
        for start in range(0, size, chunk_bytes):
            end = start + chunk_bytes
            chunks.append(Chunk(len(chunks), str(path), start, end if end < size else None))
    return chunks


def group_count(total_bytes: int, partition_bytes: int = PARTITION_BYTES) -> int:
    """Patient groups for an export of `total_bytes` (uncompressed): each about `partition_bytes`."""
    return max(1, math.ceil(total_bytes / partition_bytes))


def group_of(patient: str, groups: int) -> int:
    return zlib.crc32(patient.encode()) % groups


def group_dir(spill: Path, group: int) -> Path:
    return spill / f"g{group:05d}"


def problems_file(spill: Path, chunk: Chunk) -> Path:
    return spill / "problems" / f"c{chunk.index:05d}.tsv"


def _lines(chunk: Chunk) -> Iterator[bytes]:
    if chunk.path.endswith(".gz"):
        with gzip.open(chunk.path, "rb") as handle:
            yield from handle
        return
    with open(chunk.path, "rb") as handle:
        position = chunk.start
        if position > 0:  # the line under way at `start` belongs to the chunk before
            handle.seek(position - 1)
            position += len(handle.readline()) - 1
        for line in handle:
            if chunk.end is not None and position >= chunk.end:
                return
            yield line
            position += len(line)


class _Spill:
    """Buffered appends to one chunk's spill files, at most FLUSH_BYTES held."""

    def __init__(self, spill: Path, chunk: Chunk, groups: int) -> None:
        self.spill, self.chunk, self.groups = spill, chunk, groups
        self.pending: dict[int, list[bytes]] = {}
        self.held = 0

    def add(self, patient: str, line: bytes) -> None:
        entry = orjson.dumps(patient) + b"\t" + line.rstrip(b"\r\n") + b"\n"
        self.pending.setdefault(group_of(patient, self.groups), []).append(entry)
        self.held += len(entry)
        if self.held >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        for group, entries in self.pending.items():
            directory = group_dir(self.spill, group)
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / f"c{self.chunk.index:05d}.ndjson").open("ab") as handle:
                handle.writelines(entries)
        self.pending.clear()
        self.held = 0


def shuffle(chunk: Chunk, spill: str, groups: int) -> ChunkResult:
    """Dask task: read one chunk, append each resource line to its patient group's spill file.

    A line that is not a JSON object with a resourceType is written to the chunk's problems file (its line
    number within the chunk, the reason) and skipped; a file that cannot be read to its end (a truncated
    gzip) is reported there too. Resources without a patient reference are counted by type."""
    spill_path = Path(spill)
    result = ChunkResult(chunk)
    out = _Spill(spill_path, chunk, groups)
    problems: list[bytes] = []
    try:
        for line in _lines(chunk):
            result.lines += 1
            reason = _take(line, out, result)
            if reason is not None:
                problems.append(f"{result.lines}\t{reason}\n".encode())
    except (OSError, EOFError, zlib.error) as exc:
        problems.append(f"{result.lines + 1}\tfile unreadable from this line on: {exc}\n".encode())
    out.flush()
    result.problems = len(problems)
    if problems:
        path = problems_file(spill_path, chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(problems))
    return result


def _take(line: bytes, out: _Spill, result: ChunkResult) -> str | None:
    """Route one line; the reason it was skipped, or None."""
    if not line.strip():
        return None
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"malformed JSON: {exc}"
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return "not a FHIR resource (no resourceType)"
    rtype: str = resource["resourceType"]
    result.resources += 1
    result.by_type[rtype] = result.by_type.get(rtype, 0) + 1
    patient = patient_of(resource)
    if patient is None:
        result.unassigned[rtype] = result.unassigned.get(rtype, 0) + 1
    else:
        out.add(patient, line)
    return None


def read_group(spill: Path, group: int) -> dict[str, list[bytes]]:
    """One group's resource lines by patient id (lines as exported, not parsed)."""
    patients: dict[str, list[bytes]] = {}
    directory = group_dir(spill, group)
    if not directory.is_dir():
        return patients
    for path in sorted(directory.glob("c*.ndjson")):
        with path.open("rb") as handle:
            for entry in handle:
                key, _, line = entry.partition(b"\t")
                patients.setdefault(orjson.loads(key), []).append(line)
    return patients

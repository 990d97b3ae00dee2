"""The timeline: one row per patient x instant, as Parquet (a part per group, merged by the driver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cds_service.replay.patient import PatientReplay

FIELDS: list[pa.Field[Any]] = [
    pa.field("patientId", pa.string(), nullable=False),
    pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("dayPostInfusion", pa.float64(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("grade", pa.int8()),
    pa.field("crsStatus", pa.string(), nullable=False),
    pa.field("newData", pa.bool_(), nullable=False),
    pa.field("cards", pa.int8(), nullable=False),
    pa.field("indicator", pa.string()),
    pa.field("summary", pa.string()),
]
SCHEMA = pa.schema(FIELDS)


class TimelineWriter:
    """Collects one group's rows (a few thousand) and writes them as one Parquet file on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: dict[str, list[object]] = {name: [] for name in SCHEMA.names}

    def add(self, replay: PatientReplay) -> None:
        c = self.columns
        for i in replay.instants:
            c["patientId"].append(replay.patient_id)
            c["at"].append(i.at)
            c["dayPostInfusion"].append(round(i.day, 4))
            c["status"].append(i.status)
            c["grade"].append(i.grade)
            c["crsStatus"].append(i.crs_status)
            c["newData"].append(i.new_data)
            c["cards"].append(len(i.cards))
            c["indicator"].append(i.cards[0][0] if i.cards else None)
            c["summary"].append(i.cards[0][1] if i.cards else None)

    def close(self) -> str | None:
        """Write the part; its path, or None when the group had no patient to replay."""
        if not self.columns["patientId"]:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(self.columns, schema=SCHEMA), self.path)
        return str(self.path)


def merge(parts: list[str], destination: Path) -> int:
    """Concatenate the parts (in the given order) into one Parquet file, one part in memory at a time."""
    rows = 0
    with pq.ParquetWriter(destination, SCHEMA) as writer:
        for part in parts:
            table = pq.read_table(part, schema=SCHEMA)
            writer.write_table(table)
            rows += table.num_rows
    return rows

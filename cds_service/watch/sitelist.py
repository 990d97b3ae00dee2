"""A site's own list of patients to watch (CDS_WATCH_ENROLL_FILE), JSON or YAML:

.. code-block:: yaml

    patients:
      - patientId: "123"
        fhirServer: https://ehr.hospital.example.org/fhir/r4
        infusionTime: "2026-03-02T10:00:00Z"    # optional; else read from the record

The file is validated at start (a bad file stops the service) and read again at every scheduler tick and
``watch --once`` cycle when it changed: listed patients are enrolled (source ``list``), and patients the list
enrolled who are no longer listed leave. Every server must be one of CDS_WATCH_SERVERS_FILE's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from cds_service.errors import ConfigurationError
from cds_service.hooks.validation import describe
from cds_service.watch.servers import ServerRegistry

VARIABLE = "CDS_WATCH_ENROLL_FILE"
FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["patients"],
    "additionalProperties": False,
    "properties": {
        "patients": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["patientId", "fhirServer"],
                "additionalProperties": False,
                "properties": {
                    "patientId": {"type": "string", "pattern": FHIR_ID},
                    "fhirServer": {"type": "string", "minLength": 1},
                    "infusionTime": {"type": "string", "format": "date-time"},
                },
            },
        }
    },
}


@dataclass(frozen=True, slots=True)
class Listed:
    fhir_server: str  # normalized
    patient_id: str
    infusion_at: float | None


def load_list(path: Path, servers: ServerRegistry) -> list[Listed]:
    """The listed patients; raises ConfigurationError (the message names the entry, not the patient)."""
    try:
        text = path.read_text(encoding="utf-8")
        document = yaml.safe_load(text) if path.suffix.lower() in {".yaml", ".yml"} else json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(VARIABLE, f"cannot read {path}: {type(exc).__name__}") from None
    except (yaml.YAMLError, ValueError):
        raise ConfigurationError(VARIABLE, f"{path} is not valid JSON/YAML") from None
    error = best_match(Draft202012Validator(SCHEMA).iter_errors(document))
    if error is not None:
        raise ConfigurationError(VARIABLE, describe(error)[0])
    listed = []
    for i, item in enumerate(document["patients"]):
        server = servers.find(item["fhirServer"])
        if server is None:
            raise ConfigurationError(
                VARIABLE, f"patients[{i}]: fhirServer is not a CDS_WATCH_SERVERS_FILE server"
            )
        infusion = None
        if "infusionTime" in item:
            try:
                parsed = datetime.fromisoformat(item["infusionTime"])
            except ValueError:
                raise ConfigurationError(VARIABLE, f"patients[{i}].infusionTime: not a date-time") from None
            if parsed.tzinfo is None:
                raise ConfigurationError(VARIABLE, f"patients[{i}].infusionTime: needs a time zone")
            infusion = parsed.timestamp()
        listed.append(Listed(server.base, item["patientId"], infusion))
    return listed

"""`cds-service config check`: settings, data files, service definitions and trusted clients, validated
the way a server start validates them. It sits above cds_service.config (which every layer imports) so that
the settings module never imports the layers that read it."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from cds_service.auth import check_trust_configuration
from cds_service.config import ENV_VARIABLES, Settings
from cds_service.engine.knowledge import load_knowledge
from cds_service.errors import ConfigurationError, DataFileError
from cds_service.hooks.services import build_registry
from cds_service.ops.config_file import config_file_line


def check_configuration(environ: Mapping[str, str] | None = None) -> int:
    """`cds-service config check`: validate settings, data files and service definitions.

    Prints a summary and returns 0, or prints the error and returns 2.
    """
    try:
        settings = Settings.from_env(environ)
        registry = build_registry(load_knowledge())
        clients = check_trust_configuration(settings)
    except (ConfigurationError, DataFileError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    print("configuration OK")
    print(f"  {'configuration file':24} {config_file_line(environ, ENV_VARIABLES)}")
    for key, value in settings.summary().items():
        print(f"  {key:24} {value}")
    print(f"  {'services':24} {', '.join(s.id for s in registry.services)}")
    auth = f"JWT, trusted issuers: {', '.join(clients.issuers)}" if clients else "OFF (development mode)"
    print(f"  {'client authentication':24} {auth}")
    return 0

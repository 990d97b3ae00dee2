"""The operability blueprints: health probes, metrics, the OpenAPI document and the card preview page.

``cds_service.ops.blueprints.BLUEPRINTS`` is what cds_service.web.app registers after the CDS Hooks blueprint:

=========  ==========================================================================================
health     GET /healthz (liveness, version), GET /readyz (mappings, card content, database)
ops        GET /metrics (Prometheus), GET /openapi.json (OpenAPI 3.1 of every route)
preview    GET / (card preview page), POST /preview/hook-request, GET /preview/static/<filename>
=========  ==========================================================================================

Registering ``ops`` also installs the metrics hooks on the app (request listener, FHIR call timing).
"""

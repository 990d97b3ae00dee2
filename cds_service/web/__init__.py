"""The Flask plumbing around the pipeline: the app factory, the server, and what every request passes.

=================  =======================================================================================
``app``            ``create_app``: settings, knowledge, registry, stores, blueprints
``server``         gunicorn in production, Werkzeug in development
``state``          the per-app state (settings, knowledge, registry, feedback store)
``security``       FHIR server allowlist policies and development-mode client auth
``observability``  request ids, JSON log lines, per-phase timings
``outcome``        errors as OperationOutcome bodies (never a stack trace)
``metrics``        Prometheus counters and histograms
``health``         /healthz and /readyz
``cors``           CORS for browser-based EHR clients
``json_provider``  orjson responses
``wsgi_body``      bounded request bodies
``gc_tuning``      the collector hold around hook calls
``bench_floor``    benchmark-only endpoints (registered only with CDS_BENCH_FLOOR=1)
=================  =======================================================================================
"""

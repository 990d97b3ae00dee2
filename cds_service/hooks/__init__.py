"""The CDS Hooks pipeline, in the order a call flows through it.

=================  =======================================================================================
``api``            the Flask blueprint: discovery, hook invocation, feedback (views only parse and delegate)
``request``        the hook request body -> a typed ``HookRequest`` (schema-checked; ``typed_request`` is
                   its fast path for Observations)
``services``       the service registry: ids, hooks, prefetch templates (discovery is generated from it)
``prefetch``       prefetch resolution: supplied keys, else the FHIR server (``fhir_client``), gaps named
``pipeline``       resolve -> evaluate (cds_service.engine) -> render cards (cds_service.cards) -> check
``validation``     the JSON Schemas of requests, responses and feedback
``feedback``       the feedback store (SQLite or PostgreSQL), shared by all workers
=================  =======================================================================================
"""

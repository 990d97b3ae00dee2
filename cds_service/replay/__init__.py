"""Silent-mode replay of a FHIR Bulk Data export through the engine (``cds-service replay``).

The export is partitioned by patient on disk (``partition``), each patient group is evaluated in one Dask task
(``groups``, per patient ``patient``), and the driver writes ``patients.csv``, ``timeline.parquet`` and
``report.html`` (``outputs``, ``report``). ``runner.run_replay`` ties it together; nothing here is for
clinical use.
"""

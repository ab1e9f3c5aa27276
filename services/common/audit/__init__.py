"""The audit read client: what any service reads of the audit's results, as the matching
client in ``services.common.matching``. ``divergences.py`` holds the types of what the audit
finds, ``verifications.py`` reads the verifications it stored. The audit itself (replay,
comparison with PostgreSQL, storing a verification) is part of history:
``services.history.audit``."""

"""Visibility: the projection of ``kadence.history`` into listable rows (``projection.py``,
``store.py``), the consumers that keep it (``consumer.py`` in process, ``stream.py`` as a
faust app), and the list/count query language over it (``query.py``, ``sql.py``, ``reads.py``)."""

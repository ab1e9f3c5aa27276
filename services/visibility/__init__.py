"""Visibility: the projection of ``kadence.history`` into listable rows (``projection.py``,
``store.py``) and the consumers that keep it (``consumer.py`` in process, ``stream.py`` as a
faust app). The read side (the query language, its SQL, list/count) is the visibility read
client in ``services.common.visibility``, which every service uses."""

"""The visibility read client: how the frontend (and any service) reads visibility rows, as
the matching client in ``services.common.matching``. Services use this package, never
``services.visibility`` itself: the list/count query language (``query.py``), its
compilation into parameterised SQL over the ``visibility`` table and the search attributes
(``sql.py``), and the list/count reads (``reads.py``). The visibility service keeps the
write side: the projection, its store and the consumers that keep the rows."""

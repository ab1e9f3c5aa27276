"""The wire protocol shared by the Kadence SDK and the Kadence server.

Everything both sides must agree on lives here and nowhere else: the Avro schemas and
their codec, the topic names and record keys, the trace-header propagation, the domain
enums (event, command and timer kinds, statuses) and the record types generated from
``schemas/*.avsc``. This package imports neither the SDK (``kadence``) nor the server
(``services``).
"""

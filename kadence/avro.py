"""The Avro codec of Kadence's records, as the SDK has always offered it: the codec itself
lives in the protocol package (``kadence_protocol.avro``), shared with the server."""

from __future__ import annotations

from kadence_protocol.avro import (
    MAGIC,
    DecodeError,
    Schemas,
    command_attributes_type,
    decode,
    encode,
    event_attributes_type,
    fingerprint_of,
    header,
    history_event_encoding,
    schemas,
    schemas_dir,
    string,
    tag_unions,
)

__all__ = [
    "MAGIC",
    "DecodeError",
    "Schemas",
    "command_attributes_type",
    "decode",
    "encode",
    "event_attributes_type",
    "fingerprint_of",
    "header",
    "history_event_encoding",
    "schemas",
    "schemas_dir",
    "string",
    "tag_unions",
]

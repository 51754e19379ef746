"""Source record shapes -> the internal examples, format detection, and writing back.

Each shape a dataset may come in (TRL's prompt/chosen/rejected, ShareGPT, alpaca, OpenAI
messages, ...) is one :class:`Format` object in :data:`FORMATS`: ``parse`` turns one record into a
:class:`PreferenceExample` or :class:`SFTExample` (or raises :class:`ExampleError`), ``to_record``
goes back. Nothing else in prefkit branches on the source shape; :func:`parse_file` is the single
entry point.

Parsers check *structure* only (keys, types, roles, turn order). Whether a reply is empty, a
duplicate, too long, or equal to its rejected twin is the validate module's job, so empty strings
are kept exactly as they are.
"""

from prefkit.data.formats.base import STAGES, Format, FormatError
from prefkit.data.formats.columns import apply_columns
from prefkit.data.formats.files import parse_file, write_examples
from prefkit.data.formats.registry import FORMATS, detect_format, find_formats, get_format

__all__ = [
    "FORMATS",
    "STAGES",
    "Format",
    "FormatError",
    "apply_columns",
    "detect_format",
    "find_formats",
    "get_format",
    "parse_file",
    "write_examples",
]

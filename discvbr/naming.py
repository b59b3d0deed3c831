"""Identifiers that become parts of file paths: subjects, sessions, analyses, atlases.

A subject id such as ``../../etc`` or ``/tmp/x`` would make the pipeline write outside its
output folder, so every id that becomes a path component is checked against one pattern
before any work: a letter or digit first, then letters, digits, ``.``, ``_`` or ``-``, at
most 64 characters. No separators, no ``..``, no spaces, nothing that a file system or a
shell treats specially.
"""

from __future__ import annotations

import re

from discvbr.errors import DiscVBRError

__all__ = ["SAFE_ID_PATTERN", "is_safe_id", "check_id"]

#: What a subject, session, analysis or atlas name may look like.
SAFE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_safe_id(text: str) -> bool:
    """True when ``text`` can be used as one path component as it is (see :data:`SAFE_ID_PATTERN`)."""
    return isinstance(text, str) and SAFE_ID_PATTERN.fullmatch(text) is not None and ".." not in text


def check_id(text: str, *, what: str) -> str:
    """Return ``text`` when it is a safe id, else raise naming ``what`` and the rule.

    Parameters
    ----------
    text : str
        The id, e.g. a manifest's subject.
    what : str
        Where it comes from, for the message (e.g. ``"row 3, field 'subject'"``).

    Returns
    -------
    str
        ``text`` unchanged.

    Raises
    ------
    DiscVBRError
        When ``text`` could escape its folder or is not a plain name.
    """
    if not is_safe_id(text):
        raise DiscVBRError(
            f"{what}: {text!r} is not a valid id; ids become folder names, so use 1-64 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (no '/', '..' or spaces)"
        )
    return text

"""Griffe extension for the API reference: turns the reStructuredText habits of lightrl's docstrings into Markdown.

The docstrings follow Google style but keep two Sphinx idioms, which Markdown would print verbatim:
roles such as :class:`~lightrl.algos.base.RLModule` (written here with single backticks) become
code spans, linked to the API reference when the target is a full ``lightrl.`` path; and a paragraph
ending in ``::`` (before an indented code block) ends in a single colon.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):`(~?)([\w.]+)(\(\))?`")
LITERAL_BLOCK = re.compile(r"(?m)(\S)::$")


def role_to_markdown(match: re.Match) -> str:
    """One Sphinx role as a Markdown code span; a full ``lightrl.`` path becomes a cross-reference."""
    short, path = match.group(1), match.group(2)
    title = path.rsplit(".", 1)[-1] if short else path
    return f"[`{title}`][{path}]" if path.startswith("lightrl.") else f"`{title}`"


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring once the package is loaded, before mkdocstrings parses it."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = ROLE.sub(role_to_markdown, obj.docstring.value)
            obj.docstring.value = LITERAL_BLOCK.sub(r"\1:", value)

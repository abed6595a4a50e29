"""A Griffe extension for the API reference (mkdocs.yml): the package's docstrings
cross-reference in Sphinx's style (:func:`project`, :class:`~sfvq_ext.recipe.Recipe`),
which Markdown would show literally; each such role becomes plain code (`project`,
`Recipe`). Nothing else in a docstring changes."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`([^`]+)`")


def _plain(match: re.Match) -> str:
    target = match.group(1).strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target.lstrip('.')}`"


def _rewrite(obj) -> None:
    if obj.docstring is not None and ":`" in obj.docstring.value:
        obj.docstring.value = ROLE.sub(_plain, obj.docstring.value)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        _rewrite(obj)

    def on_package(self, *, pkg, **kwargs) -> None:  # the top package is not among on_object's
        _rewrite(pkg)

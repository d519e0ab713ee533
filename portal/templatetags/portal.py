"""Template filters of the portal's pages."""

from __future__ import annotations

from django import template

from consumer.browse import readable_dtm

register = template.Library()


@register.filter
def dtm(value: str | None) -> str:
    """An HL7 DTM of the metadata (``20150202154122``) as a reader writes it (``2015-02-02 15:41:22 UTC``)."""
    return readable_dtm(value)

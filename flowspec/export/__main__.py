"""``python -m flowspec.export``: the README's table of which nodes export."""

from flowspec.export.capability import catalogue_markdown

print(catalogue_markdown())

"""Griffe extension: show docstring doctests as Python console code blocks.

The docstrings follow Keras's style: an `Example:` line, then unindented
`>>> ` lines with the output they print, ended by a blank line. Markdown
would read those lines as nested block quotes (and `[...]` output as link
references), so before mkdocstrings renders a docstring, every doctest block
outside a fenced code block is wrapped in a ```` ```pycon ```` fence.
"""

import re

import griffe

_PROMPT = re.compile(r"^(\s*)>>>( |$)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def fence_doctests(text):
    """`text` with each doctest block (prompt to blank line) fenced as pycon."""
    lines = text.split("\n")
    out = []
    in_fence = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _FENCE.match(line):
            in_fence = not in_fence
        prompt = None if in_fence else _PROMPT.match(line)
        if prompt is None:
            out.append(line)
            index += 1
            continue
        indent = prompt.group(1)
        block = []
        while index < len(lines) and lines[index].strip():
            block.append(lines[index][len(indent):] if lines[index].startswith(indent) else lines[index])
            index += 1
        out += [f"{indent}```pycon", *(indent + row for row in block), f"{indent}```"]
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fences the doctest blocks of every docstring griffe loads."""

    def on_object(self, *, obj, loader, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)

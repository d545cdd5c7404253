"""A griffe extension for the API reference: the docstring examples (``>>>`` lines and the
output under them, up to a blank line) are shown as ``pycon`` code blocks instead of being read
as Markdown (where ``>>>`` is a quotation and ``[x]`` a link)."""

from __future__ import annotations

import griffe


def fence(text: str) -> str:
    out, block = [], []
    for line in text.splitlines() + [""]:
        if block and not line.strip():
            out += ["```pycon", *block, "```"]
            block = []
        if block or line.lstrip().startswith(">>>"):
            block.append(line)
        else:
            out.append(line)
    return "\n".join(out).rstrip("\n") + ("\n" if text.endswith("\n") else "")


class DoctestBlocks(griffe.Extension):
    def on_instance(self, **kwargs) -> None:
        obj = kwargs["obj"]
        if obj.docstring is not None:
            obj.docstring.value = fence(obj.docstring.value)

"""The sections of a Markdown file: its headings, nested by level, outside fenced code blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from swarm_lsp.code.parsing import SourceText

__all__ = ["Section", "find_sections"]

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(eq=False)
class Section:
    """A heading and the rows under it (0-based), up to the next heading of the same or a higher level."""

    level: int
    title: str
    start: int
    end: int = 0
    qualified_name: str = ""  # "Install > From source"
    parent: Section | None = None
    children: list[Section] = field(default_factory=list)


def find_sections(source: SourceText) -> list[Section]:
    """Every section of a Markdown file, in source order."""
    sections: list[Section] = []
    fence: str | None = None
    for row, line in enumerate(source.lines):
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is not None or not line.startswith(("#", " ")):
            continue
        heading = _HEADING.match(line)
        if heading:
            sections.append(Section(len(heading.group(1)), heading.group(2).strip() or "#", row))
    # nest by level; a section ends where the next one of the same or a higher level starts
    stack: list[Section] = []
    last_row = source.row_count - 1
    for section in sections:
        while stack and stack[-1].level >= section.level:
            stack.pop().end = section.start - 1
        if stack:
            section.parent = stack[-1]
            stack[-1].children.append(section)
        section.qualified_name = (
            f"{section.parent.qualified_name} > {section.title}" if section.parent else section.title
        )
        stack.append(section)
    for section in stack:
        section.end = last_row
    return sections

"""Everything a change to a name touches: its definitions and every reference, found from the index.

`find_blast_radius(workspace, name, file_text)`:

1. the definitions come from the index's symbols table (`Workspace.find_symbol`);
2. the files to read are every indexed file whose current text holds the name as a word (the
   index knows every file, so none is missed because search ranked it low);
3. in each, tree-sitter finds the identifier tokens spelled like the name (`code/occurrences.py`),
   never strings or comments, and what role each plays.

Each site is **certain** when it is known to mean the defined symbol, and **uncertain** otherwise.
For Python, a site is certain when it is:
- in a defining module;
- an import from a defining module;
- a bare use in a file that imports the name from there;
- ``module.name`` where ``module`` is how that file imports a defining module.

``obj.name`` of a method is certain only as ``self.name``/``cls.name`` in the class's own file.
Keyword arguments spelled like the name are not references.

In other languages every identifier use is uncertain (there is no import resolution here). A rename
changes only certain sites mechanically, and lists the uncertain ones.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from swarm_lsp.code.occurrences import Occurrence, name_occurrences

if TYPE_CHECKING:
    from swarm_lsp.workspace import Workspace

DEFAULT_LIMIT = 500
"""Sites listed at most by default; past it the radius says it was capped."""

FileText = Callable[[str], "str | None"]
NO_RESOLUTION = "no import resolution for this language"


@dataclass(frozen=True)
class Definition:
    path: str
    line: int
    end_line: int
    qualified_name: str
    kind: str
    module: str
    """The Python module it is defined in (``pkg.util``), "" for other languages."""


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    start_col: int
    end_col: int
    role: str
    certain: bool
    why: str
    line_text: str = ""

    @property
    def citation(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class BlastRadius:
    name: str
    definitions: list[Definition] = field(default_factory=list)
    sites: list[Site] = field(default_factory=list)
    capped: bool = False
    unreadable: list[str] = field(default_factory=list)
    """Files holding the name as text that could not be read or parsed (listed, not changed)."""

    @property
    def files(self) -> list[str]:
        return sorted({site.path for site in self.sites})

    @property
    def certain(self) -> list[Site]:
        return [site for site in self.sites if site.certain]

    @property
    def uncertain(self) -> list[Site]:
        return [site for site in self.sites if not site.certain]

    def summary(self) -> str:
        where = f"{len(self.sites)} site(s) of {self.name} in {len(self.files)} file(s)"
        detail = f": {len(self.certain)} certain, {len(self.uncertain)} uncertain"
        return where + detail + (" (capped)" if self.capped else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definitions": [asdict(definition) for definition in self.definitions],
            "files": self.files,
            "sites": [
                {key: value for key, value in asdict(site).items() if key != "line_text"}
                for site in self.sites
            ],
            "certain": len(self.certain),
            "uncertain": len(self.uncertain),
            "capped": self.capped,
            "unreadable": self.unreadable,
        }


def _public(site: Site) -> dict[str, Any]:
    return {key: value for key, value in asdict(site).items() if key != "line_text"}


def module_of(path: str) -> str:
    """The Python module a file is (``src/pkg/util.py`` -> ``pkg.util``; a package's ``__init__``)."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[0] in ("src", "lib"):
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def find_blast_radius(
    workspace: Workspace,
    name: str,
    file_text: FileText,
    *,
    qualified: str = "",
    limit: int = DEFAULT_LIMIT,
) -> BlastRadius:
    """The definitions of `name` (of `qualified`, e.g. ``Cache.fetch``, when given; else the
    top-level ones when there are any) and every site that mentions it."""
    radius = BlastRadius(name)
    symbols = [symbol for symbol in workspace.find_symbol(name) if symbol.name == name]
    if qualified and "." in qualified:
        # `Class.method`, or `module.function` (`utils.fetch`, `pkg.utils.fetch`)
        prefix = qualified.rsplit(".", 1)[0]
        named = [s for s in symbols if f".{s.qualified_name}".endswith(f".{qualified}")]
        in_module = [
            s for s in symbols if s.parent is None and f".{module_of(s.path)}".endswith(f".{prefix}")
        ]
        symbols = named or in_module
    elif any(symbol.parent is None for symbol in symbols):
        symbols = [symbol for symbol in symbols if symbol.parent is None]
    radius.definitions = [
        Definition(
            symbol.path,
            symbol.start_line,
            symbol.end_line,
            symbol.qualified_name,
            symbol.kind,
            module_of(symbol.path) if symbol.path.endswith(".py") else "",
        )
        for symbol in symbols
    ]
    word = re.compile(rf"(?<![\w$]){re.escape(name)}(?![\w$])")
    texts: dict[str, str] = {}
    for path in sorted(workspace.indexed_paths()):
        text = file_text(path)
        if text is None:
            radius.unreadable.append(path)
        elif word.search(text):
            texts[path] = text
    # Each Python file's imports are read once; the judges of every pass share them.
    imports = {path: _import_nodes(text) for path, text in texts.items() if path.endswith(".py")}
    providers = _providers(imports, radius.definitions)
    for path, text in texts.items():
        occurrences = name_occurrences(path, text, name)
        if occurrences is None:
            radius.unreadable.append(path)
            continue
        judge = _PythonJudge(path, imports[path], radius.definitions, providers) if path in imports else None
        for occurrence in occurrences:
            if occurrence.role == "keyword":
                continue
            if len(radius.sites) >= limit:
                radius.capped = True
                return radius
            certain, why = judge.judge(occurrence) if judge else (False, NO_RESOLUTION)
            radius.sites.append(
                Site(
                    path, occurrence.line, occurrence.start_col, occurrence.end_col, occurrence.role,
                    certain, why, occurrence.line_text,
                )
            )  # fmt: skip
    return radius


def _import_nodes(text: str) -> list[ast.Import | ast.ImportFrom]:
    """A Python file's import statements (none when it does not parse)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _providers(
    imports: dict[str, list[ast.Import | ast.ImportFrom]], definitions: list[Definition]
) -> set[str]:
    """The modules `name` can be taken from: the defining ones, and those that import it from one
    of them under the same name (a package's ``__init__`` re-exporting it), to a fixed point."""
    providers = {d.module for d in definitions if d.module}
    while True:
        found = {
            module_of(path)
            for path, nodes in imports.items()
            if _PythonJudge(path, nodes, definitions, providers).bare_imported
        }
        if found <= providers:
            return providers
        providers |= found


class _PythonJudge:
    """Whether an occurrence in one Python file means one of the definitions."""

    def __init__(
        self,
        path: str,
        imports: list[ast.Import | ast.ImportFrom],
        definitions: list[Definition],
        providers: set[str],
    ) -> None:
        self.path = path
        self.definitions = definitions
        self.module = module_of(path)
        self.modules = providers
        self.methods = {d.path for d in definitions if "." in d.qualified_name}
        self.functions = {d.module for d in definitions if d.module and "." not in d.qualified_name}
        self.defines_here = any(d.path == path for d in definitions)
        self.bare_imported = False
        self.import_lines: set[int] = set()
        self.module_aliases: set[str] = set()
        self.name = definitions[0].qualified_name.split(".")[-1] if definitions else ""
        self._read_imports(imports, self.name)

    def _read_imports(self, imports: list[ast.Import | ast.ImportFrom], name: str) -> None:
        """What this file imports: `name` from a providing module (bare, and on which lines), and
        the names it gives providing modules."""
        for node in imports:
            if isinstance(node, ast.ImportFrom):
                source = self._absolute("." * node.level + (node.module or ""))
                for alias in node.names:
                    local = alias.asname if alias.asname and alias.asname != alias.name else None
                    if source in self.modules and alias.name == name:
                        self.import_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
                        self.bare_imported = self.bare_imported or local is None
                    if f"{source}.{alias.name}".strip(".") in self.modules:
                        self.module_aliases.add(local or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in self.modules:
                        self.module_aliases.add(alias.asname or alias.name)
                    top = alias.name.split(".")[0]
                    if alias.asname is None and top in self.modules:  # `import a.b` also binds `a`
                        self.module_aliases.add(top)

    def _absolute(self, source: str) -> str:
        """A relative import's module as an absolute name."""
        dots = len(source) - len(source.lstrip("."))
        if not dots:
            return source
        package = self.module.split(".")
        if not self.path.endswith("__init__.py"):
            package = package[:-1]
        base = package[: len(package) - (dots - 1)] if dots > 1 else package
        rest = source.lstrip(".")
        return ".".join([*base, rest] if rest else base)

    def judge(self, occurrence: Occurrence) -> tuple[bool, str]:
        if not self.modules:
            return False, "no Python definition of this name is indexed"
        if occurrence.role == "definition":
            if any(d.path == self.path and d.line <= occurrence.line <= d.end_line for d in self.definitions):
                return True, "the definition"
            return False, "another definition with the same name"
        if occurrence.role == "attribute":
            if occurrence.qualifier in self.module_aliases:
                return True, f"{occurrence.qualifier} is a defining module"
            if self.path in self.methods and occurrence.qualifier in ("self", "cls"):
                return True, "a method of the class in its own file"
            return False, f"{occurrence.qualifier}.{self.name} may be another object's"
        if occurrence.role == "import":
            if occurrence.line in self.import_lines:
                return True, "imported from a defining module"
            return False, "imported from another module"
        if self.defines_here:
            if self.path in self.methods and self.module not in self.functions and occurrence.role == "use":
                return False, "a bare name in a file that defines it only as a method"
            return True, "in the defining module"
        if self.bare_imported:
            return True, "the file imports it from a defining module"
        return False, "this file does not import it from a defining module"

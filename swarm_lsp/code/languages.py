"""File type -> language id -> tree-sitter grammar and the queries the chunker and the graph run on it.

Grammars come from the per-language wheels (``tree-sitter-python``, ...). Each is loaded on first use and
cached; a wheel that is missing or built for an incompatible tree-sitter makes that language fall back to
the text chunker instead of failing.

Each language has two queries, written for the grammar versions pinned in pyproject.toml:

- definitions: one pattern per kind of definition. A pattern captures the definition node as
  ``@definition.<kind>``, its name as ``@name``, optionally its body as ``@body`` (when the body is not the
  node's ``body`` field) and optionally ``@scope``, a type that qualifies the name (a Go method's receiver).
  When one node matches several patterns, the earliest pattern wins.
- references: name nodes captured as ``@call``, ``@type``, ``@import`` or ``@reference``, which become
  ``Reference.kind``. Captures whose name starts with ``_`` only serve predicates.
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import PurePosixPath

from tree_sitter import Language, Parser, Query

TEXT = "text"
MARKDOWN = "markdown"

# ---------------------------------------------------------------------------------------------- queries

_PYTHON_DEFINITIONS = """
(class_definition name: (identifier) @name) @definition.class
(function_definition name: (identifier) @name) @definition.function
(module (expression_statement (assignment left: (identifier) @name)) @definition.variable)
"""

_PYTHON_REFERENCES = """
(call function: (identifier) @call)
(call function: (attribute attribute: (identifier) @call))
(decorator (identifier) @call)
(decorator (attribute attribute: (identifier) @call))
(class_definition superclasses: (argument_list (identifier) @type))
(class_definition superclasses: (argument_list (attribute attribute: (identifier) @type)))
(type (identifier) @type)
(generic_type (identifier) @type)
(type (attribute attribute: (identifier) @type))
(argument_list (identifier) @reference)
(keyword_argument value: (identifier) @reference)
(import_statement name: (dotted_name) @import)
(import_statement name: (aliased_import name: (dotted_name) @import))
(import_from_statement module_name: (dotted_name) @import)
(import_from_statement module_name: (relative_import) @import)
(import_from_statement name: (dotted_name) @import)
(import_from_statement name: (aliased_import name: (dotted_name) @import))
"""

# Shared by JavaScript, TypeScript and TSX.
_JS_DEFINITIONS = """
(class_declaration name: (_) @name body: (class_body) @body) @definition.class
(function_declaration name: (identifier) @name body: (_) @body) @definition.function
(generator_function_declaration name: (identifier) @name body: (_) @body) @definition.function
(method_definition name: (_) @name body: (_) @body) @definition.function
(lexical_declaration
  (variable_declarator
    name: (identifier) @name
    value: [(arrow_function body: (_) @body) (function_expression body: (_) @body)
            (generator_function body: (_) @body)])) @definition.function
(variable_declaration
  (variable_declarator
    name: (identifier) @name
    value: [(arrow_function body: (_) @body) (function_expression body: (_) @body)
            (generator_function body: (_) @body)])) @definition.function
(lexical_declaration
  (variable_declarator name: (identifier) @name value: (class body: (class_body) @body))) @definition.class
(program (lexical_declaration (variable_declarator name: (identifier) @name)) @definition.variable)
(program (variable_declaration (variable_declarator name: (identifier) @name)) @definition.variable)
(program
  (export_statement
    declaration: (lexical_declaration (variable_declarator name: (identifier) @name)) @definition.variable))
"""

_JS_EXTRA_DEFINITIONS = """
(field_definition
  property: (_) @name
  value: [(arrow_function body: (_) @body) (function_expression body: (_) @body)]) @definition.function
"""

_TS_EXTRA_DEFINITIONS = """
(abstract_class_declaration name: (type_identifier) @name body: (class_body) @body) @definition.class
(interface_declaration name: (type_identifier) @name body: (interface_body) @body) @definition.interface
(enum_declaration name: (identifier) @name body: (enum_body) @body) @definition.enum
(type_alias_declaration name: (type_identifier) @name) @definition.type
(internal_module name: (_) @name body: (statement_block) @body) @definition.namespace
(module name: (_) @name body: (statement_block) @body) @definition.module
(function_signature name: (identifier) @name) @definition.function
(method_signature name: (_) @name) @definition.method
(abstract_method_signature name: (_) @name) @definition.method
(public_field_definition
  name: (_) @name
  value: [(arrow_function body: (_) @body) (function_expression body: (_) @body)]) @definition.function
"""

_JS_REFERENCES = """
(call_expression function: (identifier) @call)
(call_expression function: (member_expression property: (property_identifier) @call))
(new_expression constructor: (identifier) @call)
(new_expression constructor: (member_expression property: (property_identifier) @call))
(arguments (identifier) @reference)
(import_statement source: (string (string_fragment) @import))
(import_specifier name: (identifier) @import)
(import_clause (identifier) @import)
(export_statement source: (string (string_fragment) @import))
(call_expression
  function: (identifier) @_require
  arguments: (arguments (string (string_fragment) @import))
  (#eq? @_require "require"))
"""

_JS_EXTRA_REFERENCES = """
(class_heritage (identifier) @type)
(class_heritage (member_expression property: (property_identifier) @type))
"""

_JSX_REFERENCES = """
(jsx_opening_element name: (identifier) @call)
(jsx_self_closing_element name: (identifier) @call)
"""

_TS_EXTRA_REFERENCES = """
(type_identifier) @type
(extends_clause value: (identifier) @type)
(extends_clause value: (member_expression property: (property_identifier) @type))
(nested_type_identifier name: (type_identifier) @type)
"""

_GO_DEFINITIONS = """
(function_declaration name: (identifier) @name) @definition.function
(method_declaration
  receiver: (parameter_list
    (parameter_declaration
      type: [(type_identifier) @scope
             (pointer_type (type_identifier) @scope)
             (generic_type type: (type_identifier) @scope)
             (pointer_type (generic_type type: (type_identifier) @scope))]))
  name: (field_identifier) @name) @definition.method
(method_declaration name: (field_identifier) @name) @definition.method
(type_spec
  name: (type_identifier) @name
  type: (struct_type (field_declaration_list) @body)) @definition.struct
(type_spec name: (type_identifier) @name type: (interface_type)) @definition.interface
(type_spec name: (type_identifier) @name) @definition.type
(type_alias name: (type_identifier) @name) @definition.type
(source_file (const_declaration (const_spec name: (identifier) @name) @definition.constant))
(source_file (var_declaration (var_spec name: (identifier) @name) @definition.variable))
"""

_GO_REFERENCES = """
(call_expression function: (identifier) @call)
(call_expression function: (selector_expression field: (field_identifier) @call))
(type_identifier) @type
(selector_expression field: (field_identifier) @reference)
(argument_list (identifier) @reference)
(import_spec path: (interpreted_string_literal) @import)
"""

_RUST_DEFINITIONS = """
(struct_item name: (type_identifier) @name) @definition.struct
(enum_item name: (type_identifier) @name) @definition.enum
(union_item name: (type_identifier) @name) @definition.union
(trait_item name: (type_identifier) @name) @definition.trait
(impl_item
  type: [(type_identifier) @name
         (generic_type type: (type_identifier) @name)
         (generic_type type: (scoped_type_identifier name: (type_identifier) @name))
         (scoped_type_identifier name: (type_identifier) @name)
         (reference_type type: (type_identifier) @name)
         (reference_type type: (generic_type type: (type_identifier) @name))]
  body: (declaration_list)) @definition.impl
(function_item name: (identifier) @name) @definition.function
(function_signature_item name: (identifier) @name) @definition.function
(mod_item name: (identifier) @name body: (declaration_list)) @definition.module
(type_item name: (type_identifier) @name) @definition.type
(const_item name: (identifier) @name) @definition.constant
(static_item name: (identifier) @name) @definition.constant
(macro_definition name: (identifier) @name) @definition.macro
"""

_RUST_REFERENCES = """
(call_expression function: (identifier) @call)
(call_expression function: (field_expression field: (field_identifier) @call))
(call_expression function: (scoped_identifier name: (identifier) @call))
(scoped_identifier path: (identifier) @type)
(macro_invocation macro: (identifier) @call)
(type_identifier) @type
(arguments (identifier) @reference)
(use_declaration argument: (identifier) @import)
(use_declaration argument: (scoped_identifier name: (identifier) @import))
(use_list (identifier) @import)
(use_list (scoped_identifier name: (identifier) @import))
(use_as_clause path: (identifier) @import)
(use_as_clause path: (scoped_identifier name: (identifier) @import))
(mod_item name: (identifier) @import !body)
"""

_JAVA_DEFINITIONS = """
(class_declaration name: (identifier) @name) @definition.class
(interface_declaration name: (identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(record_declaration name: (identifier) @name) @definition.record
(annotation_type_declaration name: (identifier) @name) @definition.interface
(method_declaration name: (identifier) @name) @definition.method
(constructor_declaration name: (identifier) @name) @definition.method
"""

_JAVA_REFERENCES = """
(method_invocation name: (identifier) @call)
(method_invocation object: (identifier) @reference)
(object_creation_expression type: (type_identifier) @call)
(type_identifier) @type
(field_access object: (identifier) @reference)
(argument_list (identifier) @reference)
(import_declaration (scoped_identifier) @import)
(import_declaration (scoped_identifier name: (identifier) @import))
"""

# A C function's name sits under up to two pointer declarators (C++ adds a reference declarator).
_C_FUNCTION_DECLARATORS = """
    (function_declarator declarator: (_) @name)
    (pointer_declarator declarator: (function_declarator declarator: (_) @name))
    (pointer_declarator
      declarator: (pointer_declarator declarator: (function_declarator declarator: (_) @name)))"""
_C_FUNCTION_DECLARATOR = f"[{_C_FUNCTION_DECLARATORS}\n  ]"
_CPP_FUNCTION_DECLARATOR = f"""[{_C_FUNCTION_DECLARATORS}
    (reference_declarator (function_declarator declarator: (_) @name))
  ]"""

# Function prototypes, only where declarations are (not `lock_guard<mutex> lock(m);` in a body).
_DECLARATION_PARENTS = (
    "translation_unit",
    "preproc_ifdef",
    "preproc_if",
    "preproc_else",
    "preproc_elif",
    "linkage_specification",
    "declaration_list",
    "field_declaration_list",
    "template_declaration",
)


def _prototypes(parents: tuple[str, ...], declarator: str) -> str:
    alternatives = "\n  ".join(
        f"({parent} (declaration declarator: {declarator}) @definition.function)" for parent in parents
    )
    return f"[\n  {alternatives}\n]"


def _anonymous_typedef(specifier: str, body: str, kind: str) -> str:
    """`typedef struct { ... } name;`: the name comes after the body."""
    return f"""
(type_definition
  type: ({specifier} !name body: ({body}))
  declarator: (type_identifier) @name) @definition.{kind}"""


_C_TAGGED_TYPES = """
(struct_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.struct
(union_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.union
(enum_specifier name: (type_identifier) @name body: (enumerator_list)) @definition.enum
(type_definition declarator: (type_identifier) @name) @definition.type"""

_C_MACROS = """
(preproc_function_def name: (identifier) @name) @definition.macro
(preproc_def name: (identifier) @name) @definition.macro
"""

# Pattern order matters: where two patterns find the same definition, the earlier one wins.
_C_DEFINITIONS = f"""
(function_definition declarator: {_C_FUNCTION_DECLARATOR}) @definition.function
{_prototypes(_DECLARATION_PARENTS[:6], _C_FUNCTION_DECLARATOR)}\
{_anonymous_typedef("struct_specifier", "field_declaration_list", "struct")}\
{_anonymous_typedef("union_specifier", "field_declaration_list", "union")}\
{_anonymous_typedef("enum_specifier", "enumerator_list", "enum")}\
{_C_TAGGED_TYPES}\
{_C_MACROS}"""

_CPP_DEFINITIONS = f"""
(function_definition declarator: {_CPP_FUNCTION_DECLARATOR}) @definition.function
{_prototypes(_DECLARATION_PARENTS, _CPP_FUNCTION_DECLARATOR)}
(field_declaration declarator: {_CPP_FUNCTION_DECLARATOR}) @definition.function
(class_specifier name: (type_identifier) @name body: (field_declaration_list)) @definition.class
(namespace_definition name: (_) @name body: (declaration_list)) @definition.namespace\
{_anonymous_typedef("struct_specifier", "field_declaration_list", "struct")}\
{_anonymous_typedef("enum_specifier", "enumerator_list", "enum")}\
{_C_TAGGED_TYPES}
(alias_declaration name: (type_identifier) @name) @definition.type\
{_C_MACROS}"""

_C_REFERENCES = """
(call_expression function: (identifier) @call)
(call_expression function: (field_expression field: (field_identifier) @call))
(type_identifier) @type
(argument_list (identifier) @reference)
(preproc_include path: (string_literal) @import)
"""

_CPP_REFERENCES = (
    _C_REFERENCES
    + """
(call_expression function: (qualified_identifier name: (identifier) @call))
(call_expression function: (template_function name: (identifier) @call))
(qualified_identifier scope: (namespace_identifier) @type)
"""
)

# ---------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class LanguageSpec:
    """What the index knows about one tree-sitter language."""

    id: str
    module: str  # the grammar wheel's import name
    loader: str  # the function in that module returning the TSLanguage pointer
    extensions: tuple[str, ...]
    definitions: str
    references: str
    wrappers: frozenset[str] = frozenset()
    """Parent node types that belong to the definition they wrap (decorators, ``export``, ``template<>``)."""
    group_wrappers: frozenset[str] = frozenset()
    """Wrappers that belong to the definition only when it is their single named child (Go ``type (...)``)."""
    comment_types: frozenset[str] = frozenset({"comment"})
    attached_types: frozenset[str] = frozenset()
    """Non-comment siblings that belong to the definition after them (Rust ``#[derive]``)."""
    python_docstrings: bool = False
    import_types: frozenset[str] = frozenset()
    """Statements the outline keeps whole."""


_SPECS: tuple[LanguageSpec, ...] = (
    LanguageSpec(
        id="python",
        module="tree_sitter_python",
        loader="language",
        extensions=(".py", ".pyi", ".pyw"),
        definitions=_PYTHON_DEFINITIONS,
        references=_PYTHON_REFERENCES,
        wrappers=frozenset({"decorated_definition"}),
        python_docstrings=True,
        import_types=frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
    ),
    LanguageSpec(
        id="javascript",
        module="tree_sitter_javascript",
        loader="language",
        extensions=(".js", ".mjs", ".cjs", ".jsx"),
        definitions=_JS_DEFINITIONS + _JS_EXTRA_DEFINITIONS,
        references=_JS_REFERENCES + _JS_EXTRA_REFERENCES + _JSX_REFERENCES,
        wrappers=frozenset({"export_statement"}),
        import_types=frozenset({"import_statement"}),
    ),
    LanguageSpec(
        id="typescript",
        module="tree_sitter_typescript",
        loader="language_typescript",
        extensions=(".ts", ".mts", ".cts"),
        definitions=_JS_DEFINITIONS + _TS_EXTRA_DEFINITIONS,
        references=_JS_REFERENCES + _TS_EXTRA_REFERENCES,
        wrappers=frozenset({"export_statement", "ambient_declaration"}),
        group_wrappers=frozenset({"expression_statement"}),
        import_types=frozenset({"import_statement"}),
    ),
    LanguageSpec(
        id="tsx",
        module="tree_sitter_typescript",
        loader="language_tsx",
        extensions=(".tsx",),
        definitions=_JS_DEFINITIONS + _TS_EXTRA_DEFINITIONS,
        references=_JS_REFERENCES + _TS_EXTRA_REFERENCES + _JSX_REFERENCES,
        wrappers=frozenset({"export_statement", "ambient_declaration"}),
        group_wrappers=frozenset({"expression_statement"}),
        import_types=frozenset({"import_statement"}),
    ),
    LanguageSpec(
        id="go",
        module="tree_sitter_go",
        loader="language",
        extensions=(".go",),
        definitions=_GO_DEFINITIONS,
        references=_GO_REFERENCES,
        group_wrappers=frozenset({"type_declaration", "const_declaration", "var_declaration"}),
        import_types=frozenset({"import_declaration", "package_clause"}),
    ),
    LanguageSpec(
        id="rust",
        module="tree_sitter_rust",
        loader="language",
        extensions=(".rs",),
        definitions=_RUST_DEFINITIONS,
        references=_RUST_REFERENCES,
        comment_types=frozenset({"line_comment", "block_comment"}),
        attached_types=frozenset({"attribute_item"}),
        import_types=frozenset({"use_declaration", "extern_crate_declaration"}),
    ),
    LanguageSpec(
        id="java",
        module="tree_sitter_java",
        loader="language",
        extensions=(".java",),
        definitions=_JAVA_DEFINITIONS,
        references=_JAVA_REFERENCES,
        comment_types=frozenset({"line_comment", "block_comment"}),
        import_types=frozenset({"import_declaration", "package_declaration"}),
    ),
    LanguageSpec(
        id="c",
        module="tree_sitter_c",
        loader="language",
        extensions=(".c", ".h"),
        definitions=_C_DEFINITIONS,
        references=_C_REFERENCES,
        wrappers=frozenset({"type_definition"}),
        import_types=frozenset({"preproc_include"}),
    ),
    LanguageSpec(
        id="cpp",
        module="tree_sitter_cpp",
        loader="language",
        extensions=(".cc", ".cpp", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp"),
        definitions=_CPP_DEFINITIONS,
        references=_CPP_REFERENCES,
        wrappers=frozenset({"template_declaration", "type_definition"}),
        import_types=frozenset({"preproc_include", "using_declaration"}),
    ),
)

SPECS: dict[str, LanguageSpec] = {spec.id: spec for spec in _SPECS}
_BY_EXTENSION: dict[str, str] = {ext: spec.id for spec in _SPECS for ext in spec.extensions}
_MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mdx"})
_SHEBANGS = (("python", "python"), ("node", "javascript"), ("deno", "typescript"), ("bun", "javascript"))
_CPP_IN_HEADER = re.compile(
    r"^\s*(?:class\s+\w+\s*[:{]|namespace\s+\w*\s*\{|template\s*<|#include\s*<(?:vector|string|memory|map)>"
    r"|(?:public|private|protected)\s*:)",
    re.MULTILINE,
)


def language_for(path: str) -> str:
    """The language id for a path by its name alone: a grammar id, ``"markdown"``, or ``"text"``."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in _BY_EXTENSION:
        return _BY_EXTENSION[suffix]
    if suffix in _MARKDOWN_EXTENSIONS:
        return MARKDOWN
    return TEXT


def detect_language(path: str, text: str) -> str:
    """``language_for`` refined by content: C++ in a ``.h`` header, a shebang on a file without extension."""
    language = language_for(path)
    if language == "c" and path.lower().endswith(".h") and _CPP_IN_HEADER.search(text, 0, 200_000):
        return "cpp"
    if language == TEXT and text.startswith("#!") and not PurePosixPath(path).suffix:
        first_line = text.split("\n", 1)[0]
        for interpreter, shebang_language in _SHEBANGS:
            if interpreter in first_line:
                return shebang_language
    return language


def has_grammar(language: str) -> bool:
    """Whether ``language`` is parsed with tree-sitter here (its grammar wheel loads)."""
    return grammar(language) is not None


# ---------------------------------------------------------------------------------------------- grammars


@dataclass(frozen=True)
class Grammar:
    spec: LanguageSpec
    language: Language
    definitions: Query
    references: Query
    _parsers: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    def parser(self) -> Parser:
        """A parser for this grammar, one per thread (parsers are not thread-safe)."""
        parser = getattr(self._parsers, "parser", None)
        if parser is None:
            parser = self._parsers.parser = Parser(self.language)
        return parser


@cache
def load_language(language: str) -> Language | None:
    """The tree-sitter Language for an id, or None when its grammar wheel is missing or incompatible."""
    spec = SPECS.get(language)
    if spec is None:
        return None
    try:
        module = importlib.import_module(spec.module)
        return Language(getattr(module, spec.loader)())
    except Exception:  # ImportError, an ABI the installed tree-sitter refuses, a renamed loader
        return None


@cache
def grammar(language: str) -> Grammar | None:
    """The loaded grammar with its compiled queries, or None (then the text chunker takes the file)."""
    ts_language = load_language(language)
    if ts_language is None:
        return None
    spec = SPECS[language]
    try:
        definitions = Query(ts_language, spec.definitions)
        references = Query(ts_language, spec.references)
    except Exception:  # a grammar version whose node names differ from what the queries expect
        return None
    return Grammar(spec=spec, language=ts_language, definitions=definitions, references=references)


def compile_queries(language: str) -> tuple[Query, Query]:
    """Compile a language's queries, raising ``QueryError`` with the grammar's complaint (for tests)."""
    ts_language = load_language(language)
    if ts_language is None:
        raise LookupError(f"the grammar wheel {SPECS[language].module} is not installed")
    spec = SPECS[language]
    return Query(ts_language, spec.definitions), Query(ts_language, spec.references)

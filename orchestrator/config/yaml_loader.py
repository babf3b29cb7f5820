"""A guarded YAML loader for sweep configs.

``yaml.safe_load`` with four limits a config never needs to exceed, each
refused with one line (:class:`YamlRefused`):

- aliases: at most :data:`MAX_ALIASES` uses, and the document expanded
  through them at most :data:`MAX_NODES` nodes (a "billion laughs" bomb is
  refused before anything is built from it);
- nesting: at most :data:`MAX_DEPTH` levels;
- duplicate keys in a mapping (plain YAML lets the last one win silently);
- text that is not UTF-8.

Floats resolve as in YAML 1.2, so ``lr: 1e-3`` is the number 0.001 (YAML 1.1,
PyYAML's default, reads it as a string because it lacks a dot).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 32


class YamlRefused(ValueError):
    """One line: why the YAML text is refused (without the file name)."""


_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _line(node: Node) -> str:
    return f"line {node.start_mark.line + 1}"


class GuardedLoader(yaml.SafeLoader):
    """SafeLoader with the limits of the module docstring."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise YamlRefused(
                    f"more than {MAX_ALIASES} aliases (*name) at line {event.start_mark.line + 1}; "
                    "write the values out"
                )
        self._depth += 1
        if self._depth > MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise YamlRefused(f"nests deeper than {MAX_DEPTH} levels (line {line}); flatten it")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._count(node)
        return node

    def _count(self, node: Node) -> None:
        """The node's size with aliases expanded (memoised per node), refused over MAX_NODES."""
        if id(node) in self._sizes:
            return
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._sizes.get(id(child), 1) for child in node.value)
        elif isinstance(node, MappingNode):
            size += sum(
                self._sizes.get(id(key), 1) + self._sizes.get(id(value), 1) for key, value in node.value
            )
        if size > MAX_NODES:
            raise YamlRefused(
                f"the document expands to more than {MAX_NODES} values through its aliases "
                f"({_line(node)}); write the values out"
            )
        self._sizes[id(node)] = size

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class says so
            if duplicate:
                raise YamlRefused(f"key {key!r} appears twice in one mapping ({_line(key_node)})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


GuardedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def load_yaml(data: bytes) -> Any:
    """Parse ``data`` (UTF-8 bytes) with :class:`GuardedLoader`.

    Raises YamlRefused for the module's limits and non-UTF-8 text, and
    ``yaml.YAMLError`` for text that is not YAML.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise YamlRefused(
            f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None
    loader = GuardedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()

"""Reading YAML that users write: a SafeLoader that rejects duplicate keys and reads ``1e-4``
as a float, bounded against alias bombs and deep nesting, and text files that are refused with
one message naming the file when they are missing, a folder, a device or not UTF-8. No torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lmablate.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e-4`` as a float (YAML 1.2 style)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


MAX_VALUES = 100_000  # a config is a few hundred values; aliases that expand past this are a bomb


def _expanded_size(node: yaml.Node, sizes: dict[int, int], limit: int) -> int:
    """How many values ``node`` holds once every alias is expanded (counted up to ``limit``:
    an alias is the same node object, so each is sized once and the walk stays small)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = limit + 1  # a node reached again while being sized is a cycle
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, limit)
        if total > limit:
            break
    sizes[id(node)] = total
    return total


def parse_yaml(text: str, source: str = "<string>") -> Any:
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _expanded_size(node, {}, MAX_VALUES) > MAX_VALUES:
                raise ConfigError(
                    f"{source}: holds more than {MAX_VALUES:,} values once its YAML aliases "
                    "(*name) are expanded, far beyond any config, so the file is refused"
                )
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply to be a config") from None


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file's contents, or a ConfigError naming the file and the problem."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give a file")
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a regular file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is not valid UTF-8)"
        ) from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping, with user-facing errors."""
    path = Path(path)
    data = parse_yaml(read_text_file(path, "config file"), source=str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {kind_of(data)}")
    return data


def kind_of(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )

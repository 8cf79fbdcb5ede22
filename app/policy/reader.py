"""Reading YAML nodes with their line numbers: the policy loader's toolkit.

`NodeReader` composes a text into nodes and reads scalars, mappings, durations and choices from
them, collecting every problem (with its line) instead of stopping at the first. Subclasses
walk a particular document with it (`app.policy.loader`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from datetime import timedelta
from typing import Final, Generic, TypeVar

import yaml

from app.policy.durations import parse_duration
from app.policy.model import PolicyError, PolicyProblem

TAG_STR: Final = "tag:yaml.org,2002:str"
TAG_NULL: Final = "tag:yaml.org,2002:null"
TAG_MERGE: Final = "tag:yaml.org,2002:merge"
TOP: Final = ""
MAX_NAME_LENGTH: Final = 100
"""Longest rule or blackout name."""

Entries = dict[str, tuple[yaml.Node, yaml.Node]]

# libyaml composes ~20 times faster; both keep line numbers and use the same constructor.
_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


class Invalid:
    """Marks a value that was already reported as a problem."""


INVALID: Final = Invalid()


T = TypeVar("T")


class NodeReader(Generic[T]):
    """Reads one YAML document node by node; `problems` collects what is wrong."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.problems: list[PolicyProblem] = []
        self.warnings: list[PolicyProblem] = []
        self.loader: yaml.SafeLoader | yaml.CSafeLoader

    # --- entry point ----------------------------------------------------------------------------

    def parse(self) -> T:
        try:
            # The reader checks the characters as soon as the loader is made.
            self.loader = _Loader(self.text)
        except yaml.YAMLError as exc:
            raise PolicyError([self._yaml_problem(exc)]) from None
        try:
            try:
                root = self.loader.get_single_node()
            except yaml.YAMLError as exc:
                raise PolicyError([self._yaml_problem(exc)]) from None
            policy = self.document(root)
        finally:
            self.loader.dispose()
        if self.problems:
            raise PolicyError(sorted(self.problems, key=lambda p: p.line))
        return policy

    def _yaml_problem(self, exc: yaml.YAMLError) -> PolicyProblem:
        line = 1
        if isinstance(exc, yaml.MarkedYAMLError):
            mark = exc.problem_mark or exc.context_mark
            if mark is not None:
                line = mark.line + 1
            parts = [p for p in (exc.context, exc.problem) if p]
            what = "; ".join(parts) or "cannot be parsed"
        elif isinstance(exc, yaml.reader.ReaderError):
            line = self.text.count("\n", 0, min(exc.position, len(self.text))) + 1
            character = exc.character
            shown = f"#x{character:04x}" if isinstance(character, int) else repr(character)
            what = f"unacceptable character {shown}: {exc.reason}"
        else:
            what = str(exc)
        return PolicyProblem(self.source, line, f"not valid YAML: {what}")

    # --- reporting ------------------------------------------------------------------------------

    def error(self, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(PolicyProblem(self.source, line, message))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(PolicyProblem(self.source, line, message))

    @staticmethod
    def join(path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def describe(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if node.tag == TAG_NULL:
            return "nothing (null)"
        text = str(node.value)
        if len(text) > 40:
            text = text[:39] + "…"
        return repr(text) if node.tag == TAG_STR else text

    # --- structure ------------------------------------------------------------------------------

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == TAG_NULL

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...], what: str = ""
    ) -> Entries | None:
        """The keys of a mapping node, reporting unknown and duplicate keys."""
        where = path or "the policy"
        if not isinstance(node, yaml.MappingNode):
            self.error(
                node,
                f"{where} must be a mapping of keys to values{what}, got {self.describe(node)}",
            )
            return None
        first_seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == TAG_MERGE or not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_seen:
                self.error(
                    key_node,
                    f"duplicate key '{key_node.value}' in {where} "
                    f"(first given on line {first_seen[key_node.value]})",
                )
            else:
                first_seen[key_node.value] = line
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.problems.append(self._yaml_problem(exc))
            return None
        entries: Entries = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != TAG_STR:
                self.error(key_node, f"{where}: {self.describe(key_node)} is not a key name")
                continue
            key = str(key_node.value)
            if key not in allowed:
                self.error(key_node, f"unknown key '{key}' in {where}{suggest(key, allowed)}")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            return INVALID
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(node, f"cannot read this value: {exc}")
            return INVALID

    # --- typed values ---------------------------------------------------------------------------

    def integer(self, node: yaml.Node, path: str, minimum: int, maximum: int) -> int | None:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, f"{path} must be a whole number, got {self.describe(node)}")
            return None
        if not minimum <= value <= maximum:
            self.error(node, f"{path} must be between {minimum} and {maximum}, got {value}")
            return None
        return value

    def number(
        self,
        node: yaml.Node,
        path: str,
        minimum: float,
        maximum: float | None = None,
        *,
        above_minimum: bool = False,
        below_maximum: bool = False,
    ) -> float | None:
        value = self.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(node, f"{path} must be a number, got {self.describe(node)}")
            return None
        if not math.isfinite(value):
            self.error(node, f"{path} must be a finite number, got {self.describe(node)}")
            return None
        low_ok = value > minimum if above_minimum else value >= minimum
        high_ok = maximum is None or (value < maximum if below_maximum else value <= maximum)
        if not (low_ok and high_ok):
            low = f"more than {minimum:g}" if above_minimum else f"at least {minimum:g}"
            high = ""
            if maximum is not None:
                bound = "less than" if below_maximum else "at most"
                high = f" and {bound} {maximum:g}"
            self.error(node, f"{path} must be {low}{high}, got {value:g}")
            return None
        return float(value)

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        value = self.scalar(node)
        if not isinstance(value, bool):
            self.error(node, f"{path} must be true or false, got {self.describe(node)}")
            return None
        return value

    def choice(self, node: yaml.Node, path: str, choices: tuple[str, ...]) -> str | None:
        value = self.scalar(node)
        if not isinstance(value, str) or value not in choices:
            self.error(
                node,
                f"{path} must be one of {', '.join(choices)}, got {self.describe(node)}",
            )
            return None
        return value

    def text_value(self, node: yaml.Node, path: str, max_length: int | None = None) -> str | None:
        value = self.scalar(node)
        if not isinstance(value, str):
            self.error(node, f"{path} must be text, got {self.describe(node)} (quote it)")
            return None
        if not value.strip():
            self.error(node, f"{path} must not be empty")
            return None
        if max_length is not None and len(value) > max_length:
            self.error(node, f"{path} must be at most {max_length} characters long")
            return None
        return value

    def duration(self, node: yaml.Node, path: str, *, positive: bool) -> timedelta | None:
        value = self.scalar(node)
        if value is INVALID:
            got = self.describe(node)
            self.error(node, f"{path} must be a duration like 30s, 10m or 6h, got {got}")
            return None
        try:
            result = parse_duration(value)
        except ValueError as exc:
            self.error(node, f"{path}: {exc}")
            return None
        if positive and not result:
            self.error(node, f"{path} must be longer than 0s")
            return None
        return result

    def texts(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        """A text or a non-empty list of texts, each with its node (for its line)."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if isinstance(node, yaml.SequenceNode) and not items:
            self.error(node, f"{path} must not be an empty list")
        result: list[tuple[str, yaml.Node]] = []
        for item in items:
            value = self.text_value(item, path)
            if value is not None:
                result.append((value, item))
        return result

    def unique_name(
        self,
        node: yaml.Node,
        path: str,
        what: str,
        names: dict[str, int],
        reserved: str | None = None,
    ) -> str | None:
        """A name that is text, trimmed, not ``reserved`` and not used before (``names`` maps
        the names so far to their lines)."""
        name = self.text_value(node, path, MAX_NAME_LENGTH)
        if name is not None and name.strip() != name:
            self.error(node, f"{path} must not start or end with spaces")
            return None
        if reserved is not None and name == reserved:
            self.error(node, f"{path}: '{reserved}' is reserved for the defaults")
            return None
        if name is not None and name in names:
            self.error(
                node, f"{path}: duplicate {what} name '{name}' (first used on line {names[name]})"
            )
            return None
        if name is not None:
            names[name] = node.start_mark.line + 1
        return name

    # --- sections -------------------------------------------------------------------------------

    def document(self, root: yaml.Node | None) -> T:
        """Walk the composed document; subclasses build their result from it."""
        raise NotImplementedError


def suggest(key: str, allowed: Iterable[str]) -> str:
    options = list(allowed)
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; expected one of: {', '.join(options)}"

"""YAML read the way `kubectl apply` reads it, so a file means here what it means on a cluster.

PyYAML's safe loader differs from kubectl's (sigs.k8s.io/yaml over go-yaml) in three ways that
change what a DistillationJob says, so this loader undoes them:
- a key written twice keeps the last value silently; kubectl (strict field validation, the
  default since Kubernetes 1.27) refuses it. Here it is an error naming both lines;
- `2e-5` is a string (YAML 1.1 wants a dot); go-yaml reads it as a number, and so does this;
- an unquoted date (`2026-12-07`) becomes a Python date; kubectl converts YAML to JSON, where
  it is a string, and so is it here;
- `2.0` stays a float; kubectl's YAML-to-JSON writes it as `2` (Go's encoding of a whole float64
  below 1e21), which the API server takes as an integer, and so is it here.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping names the same key twice."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and resolves scalars as kubectl does."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a key written here overrides a merged (`<<`) one: no duplicate
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                continue  # unhashable: SafeLoader raises its own error below
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first}); kubectl refuses a key given twice",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | int:
        value = super().construct_yaml_float(node)
        return int(value) if value.is_integer() and abs(value) < 1e21 else value


StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)


# go-yaml's float: an exponent without a dot (`1e-5`) is a number too.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)

# Copy the resolver table so SafeLoader itself is left as it was, without timestamps and with
# go-yaml's float rule in place of YAML 1.1's.
_REPLACED = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:float")
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in rules if tag not in _REPLACED]
    for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_all(text: str) -> list[Any]:
    """Every document in a YAML (or JSON) text, empty ones left out; raises yaml.YAMLError."""
    return [
        doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None
    ]  # StrictLoader is a SafeLoader

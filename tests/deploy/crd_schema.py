"""The Prometheus Operator's CRD schemas (tests/deploy/schemas), made strict for our checks."""

import copy


def strict_crd_schema(schema):
    """The CRD schema with unknown fields rejected wherever it lists an object's properties.

    The operator's openAPIV3Schema says nothing about fields it does not list; a misspelt field
    in one of our manifests would then pass, so every object that lists properties (and does
    not preserve unknown fields on purpose) gets additionalProperties: false.
    """
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema

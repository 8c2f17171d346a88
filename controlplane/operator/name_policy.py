"""Which namespaces may serve a model id: a guard against name squatting across namespaces.

A Model's ``metadata.name`` is the id clients put in ``"model"``, and the older of two Models with one
id wins it: without a policy a ``dev`` namespace could create today a name production will use
tomorrow. ``--kubernetes-model-namespaces 'PATTERN=ns1,ns2'`` (shell patterns over ids, several
entries; the chart's ``controlplane.modelNamespaces``) lets only the listed namespaces serve an id
that matches; a Model elsewhere is not served and says why (``NamespaceNotAllowed``). Ids no pattern
matches may be served from any watched namespace.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class NamePolicy:
    rules: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, entries: list[str]) -> NamePolicy:
        rules = []
        for entry in entries:
            pattern, sep, namespaces = entry.partition("=")
            allowed = frozenset(n.strip() for n in namespaces.split(",") if n.strip())
            if not sep or not pattern.strip() or not allowed:
                raise ValueError(
                    f"--kubernetes-model-namespaces: {entry!r} is not PATTERN=NAMESPACE[,NAMESPACE…]"
                )
            rules.append((pattern.strip(), allowed))
        return cls(tuple(rules))

    def refusal(self, model_id: str, namespace: str) -> str:
        """Why ``namespace`` may not serve ``model_id`` (empty: it may). Every matching rule must allow it."""
        for pattern, allowed in self.rules:
            if fnmatch.fnmatchcase(model_id, pattern) and namespace not in allowed:
                names = ", ".join(sorted(allowed))
                rule = f"{pattern}={','.join(sorted(allowed))}"
                return (
                    f"the model id {model_id!r} may be served only from namespace(s) {names} "
                    f"(--kubernetes-model-namespaces {rule}); this Model is in {namespace!r}"
                )
        return ""

"""Generate ``docs/configuration.md`` from :data:`kongtaskd.config.KEYS`.

    python -m kongtaskd.docgen > docs/configuration.md

The reference is generated, not written, so it cannot drift from the loader: every key's
type, default, environment variable and documentation come from the same table that
validates the file. ``tests/unit/test_docs.py`` regenerates it and fails when the
committed file is stale or a key has no documentation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import yaml

from kongtaskd.config import ENV_PREFIX, GRAPHILE_SCHEMA_ENV, KEYS, Key, Section, env_variables

GENERATED_BY = "python -m kongtaskd.docgen > docs/configuration.md"


def _default_of(key: Key) -> str:
    """A key's default as the user would write it in YAML, inline; a section that is on by
    default shows its sub-keys' defaults (``log: {}`` means those)."""
    if isinstance(key.type, Section) and key.default is not None:
        return (
            "{" + ", ".join(f"{sub.name}: {_default(sub.default)}" for sub in key.type.keys) + "}"
        )
    return _default(key.default)


def _default(value: Any) -> str:
    """A value as the user would write it in YAML, inline."""
    plain = list(value) if isinstance(value, tuple) else value
    text = yaml.safe_dump(plain, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def _walk() -> Iterator[tuple[str, Key]]:
    """Every key and sub-key with its dotted path, in table order."""
    for key in KEYS:
        yield key.name, key
        if isinstance(key.type, Section):
            for sub in key.type.keys:
                yield f"{key.name}.{sub.name}", sub


def _anchor(path: str) -> str:
    """GitHub's heading anchor for ``### `path` ``: lower case, dots dropped."""
    return path.replace(".", "").lower()


def render() -> str:
    """The whole of docs/configuration.md."""
    env_by_path = {path: name for name, path in env_variables().items()}
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from kongtaskd/config.py (KEYS) by `{GENERATED_BY}`;",
        "     edit the doc strings there, not this file. A test fails when it is stale. -->",
        "",
        "kongtaskd reads one YAML file (`-c FILE`; JSON is YAML too). Every key is optional;",
        "an empty file means every default. Precedence, highest first: command-line flags,",
        f"environment variables (`{ENV_PREFIX}<KEY>`, listed below; for `schema` also",
        f"graphile-worker's `{GRAPHILE_SCHEMA_ENV}`), the file, the defaults. The connection",
        "has its own ladder: `--connection`, then `DATABASE_URL`, then the file's",
        "`connection`, then libpq's `PG*` variables.",
        "",
        "Relative paths are relative to the file's directory. Unknown keys, wrong types and",
        "impossible values stop kongtaskd with one line naming the file, line and key, e.g.",
        "`kongtask.yaml:7: metrics.port: expected an integer between 1 and 65535, got 0`;",
        "a misspelt key gets a suggestion. `kongtaskd init` writes a commented file with",
        "every key at its default; `conf/kongtask.yaml` is the example the README runs.",
        "",
        "| key | type | default | environment |",
        "|---|---|---|---|",
    ]
    for path, key in _walk():
        env = f"`{env_by_path[path]}`" if path in env_by_path else "-"
        kind = key.type.describe().replace("|", "\\|")
        default = _default_of(key).replace("|", "\\|")
        out.append(f"| [`{path}`](#{_anchor(path)}) | {kind} | `{default}` | {env} |")
    for path, key in _walk():
        out += ["", f"### `{path}`", ""]
        facts = [f"Type: {key.type.describe()}.", f"Default: `{_default_of(key)}`."]
        if path in env_by_path:
            facts.append(f"Environment: `{env_by_path[path]}`.")
        out.append(" ".join(facts))
        out += ["", key.doc]
    return "\n".join(out) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())

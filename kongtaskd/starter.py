"""``kongtaskd init``: the starter ``kongtask.yaml`` (every key, its default and trade-off)
and a handler module with one example task.

Kept apart from ``kongtaskd.admin`` so that the CLI can name these files in its ``--help``
without importing the database verbs: the daemon's start-up pays for every import.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kongtaskd import __version__
from kongtaskd.config import KEYS, Key, Section, env_variables
from kongtaskd.errors import ConfigError

__all__ = ["CONFIG_FILE", "EXAMPLE_TASK", "HANDLERS_FILE", "init_project", "render_config"]

#: What ``kongtaskd init`` writes.
CONFIG_FILE = "kongtask.yaml"
HANDLERS_FILE = "tasks.py"
EXAMPLE_TASK = "hello"

#: Values `init` writes instead of the defaults, so the starter config runs the example
#: handler in tasks.py next to it.
_STARTER_VALUES: dict[str, Any] = {
    "tasks": {EXAMPLE_TASK: f"tasks:{EXAMPLE_TASK}"},
    "python_path": ["."],
}

_WRAP = 88


def _comment(text: str, indent: str = "") -> list[str]:
    return [
        f"{indent}# {line}"
        for line in textwrap.wrap(text, _WRAP - len(indent) - 2, break_on_hyphens=False)
    ]


def _yaml_value(name: str, value: Any, indent: str = "") -> list[str]:
    """``name: value`` as YAML: mappings as blocks (readable), the rest inline."""
    if isinstance(value, Mapping) and value:
        text = yaml.safe_dump(
            {name: dict(value)}, default_flow_style=False, sort_keys=False, allow_unicode=True
        )
        lines = text.splitlines()
    else:
        plain = list(value) if isinstance(value, tuple) else value
        inline = yaml.safe_dump(plain, default_flow_style=True, allow_unicode=True).strip()
        # A bare scalar is dumped as a document of its own, with an end marker.
        lines = [f"{name}: {inline.removesuffix('...').strip()}"]
    return [f"{indent}{line}" for line in lines]


def render_config() -> str:
    """The commented starter ``kongtask.yaml``: every key of :data:`KEYS` with its default
    (from the same table the loader uses, so it cannot drift) and its documentation."""
    env_names = {path: name for name, path in env_variables().items()}
    lines = [
        f"# kongtaskd configuration, written by `kongtaskd init` (kongtaskd {__version__}).",
        "#",
        "# Every key is here with its default and what changing it trades. Environment",
        "# variables (KONGTASK_<KEY>, named below) override this file, and command-line flags",
        "# override both. Relative paths are relative to this file's directory.",
        "#",
        f"# Start: kongtaskd migrate -c {CONFIG_FILE}, then kongtaskd -c {CONFIG_FILE}",
    ]

    def describe(key: Key, path: str, indent: str) -> list[str]:
        out = _comment(key.doc, indent)
        if path in env_names:
            out.append(f"{indent}# Environment: {env_names[path]}.")
        return out

    for key in KEYS:
        lines.append("")
        lines += describe(key, key.name, "")
        if isinstance(key.type, Section):
            if key.default is None:
                # Off by default: show the section, commented out, with its sub-keys.
                lines += _yaml_value(key.name, None)
                lines.append(f"# To turn it on, replace the line above with '{key.name}: {{}}' or:")
                lines.append(f"# {key.name}:")
                for sub in key.type.keys:
                    for line in describe(sub, f"{key.name}.{sub.name}", "  "):
                        lines.append("# " + line)
                    lines += ["# " + line for line in _yaml_value(sub.name, sub.default, "  ")]
            else:
                lines.append(f"{key.name}:")
                for sub in key.type.keys:
                    lines += describe(sub, f"{key.name}.{sub.name}", "  ")
                    lines += _yaml_value(sub.name, sub.default, "  ")
            continue
        if key.name in _STARTER_VALUES:
            default = " ".join(_yaml_value(key.name, key.default)).split(":", 1)[1].strip()
            lines.append(f"# Set for the example handler in {HANDLERS_FILE}; default: {default}.")
            lines += _yaml_value(key.name, _STARTER_VALUES[key.name])
        else:
            lines += _yaml_value(key.name, key.default)
    return "\n".join(lines) + "\n"


def _handlers_source() -> str:
    return resources.files("kongtaskd").joinpath("templates/tasks.py.template").read_text("utf-8")


def init_project(directory: str | Path) -> list[Path]:
    """Write ``kongtask.yaml`` and ``tasks.py`` into ``directory`` (created if missing).

    Refuses (ConfigError, nothing written) if either file exists: a starter must never
    overwrite someone's configuration or code.
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: not a directory")
    files = {target / CONFIG_FILE: render_config(), target / HANDLERS_FILE: _handlers_source()}
    for path in files:
        if path.exists() or path.is_symlink():
            raise ConfigError(
                f"{path}: already exists; kongtaskd init does not overwrite files "
                "(move it away or give another directory)"
            )
    try:
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for path, text in files.items():
            # "x": fail rather than overwrite a file that appeared since the check.
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text)
            written.append(path)
    except FileExistsError as error:
        raise ConfigError(
            f"{error.filename}: already exists; kongtaskd init does not overwrite files"
        ) from None
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise ConfigError(f"cannot write {error.filename or target}: {reason}") from None
    return written

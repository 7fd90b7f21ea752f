"""The documentation cannot drift: generated parts are current, every key is documented,
links resolve, and every command's help shows its defaults and an example."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kongtaskd.cli import build_parser
from kongtaskd.config import KEYS, Section
from kongtaskd.docgen import GENERATED_BY, render

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
MARKDOWN = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.MULTILINE)


def test_configuration_reference_is_current() -> None:
    committed = (DOCS / "configuration.md").read_text()
    assert committed == render(), f"docs/configuration.md is stale: run `{GENERATED_BY}`"


def all_keys() -> Iterator[tuple[str, str]]:
    for key in KEYS:
        yield key.name, key.doc
        if isinstance(key.type, Section):
            for sub in key.type.keys:
                yield f"{key.name}.{sub.name}", sub.doc


@pytest.mark.parametrize(("path", "doc"), list(all_keys()), ids=[p for p, _ in all_keys()])
def test_every_key_is_documented(path: str, doc: str) -> None:
    # A doc says what the key does, its default, and when to change it: a sentence or two.
    assert len(doc.split()) >= 12, f"config key {path!r} has (almost) no documentation"
    assert "default" in doc.lower(), f"config key {path!r}: its doc does not state the default"
    assert f"### `{path}`" in (DOCS / "configuration.md").read_text()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def links() -> Iterator[tuple[Path, str]]:
    for document in MARKDOWN:
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
        for match in _LINK.finditer(text):
            target = match.group(1)
            if not re.match(r"[a-z]+:", target):  # http(s): and mailto: are not checked
                yield document, target


@pytest.mark.parametrize(
    ("document", "target"),
    list(links()),
    ids=[f"{d.name}->{t}" for d, t in links()],
)
def test_relative_links_resolve(document: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    file = (document.parent / path).resolve() if path else document
    assert file.exists(), f"{document.relative_to(REPO)}: link to missing {target}"
    if anchor and file.suffix == ".md":
        anchors = {slug(h) for h in _HEADING.findall(file.read_text())}
        assert anchor in anchors, f"{document.relative_to(REPO)}: no heading for #{anchor}"


def test_the_docs_the_issue_asks_for_exist_and_the_readme_links_them() -> None:
    readme = (REPO / "README.md").read_text()
    for name in (
        "configuration.md",
        "deployment.md",
        "graphile-worker.md",
        "operations.md",
        "architecture.md",
        "embedded.md",
    ):
        assert (DOCS / name).exists(), name
        assert f"(docs/{name}" in readme, f"README.md does not link docs/{name}"
    assert "(perf/README.md)" in readme


def test_the_readme_architecture_table_names_real_files() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    for cell in re.findall(r"^\| `([^`]+)`", table, re.MULTILINE):
        assert (REPO / cell).exists(), f"README architecture table: {cell} does not exist"


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(
        name: str, parser: argparse.ArgumentParser
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(f"{name} {sub_name}", sub)

    yield from walk("kongtaskd", build_parser())


@pytest.mark.parametrize(("name", "parser"), list(parsers()), ids=[n for n, _ in parsers()])
def test_every_help_shows_defaults_and_an_example(
    name: str, parser: argparse.ArgumentParser
) -> None:
    assert "example" in (parser.epilog or ""), f"'{name} --help' has no example"
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue  # positionals, and flags that are simply off unless given
        if action.help in (None, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
            continue
        assert "default" in action.help, (
            f"'{name} --help': {'/'.join(action.option_strings)} does not say its default"
        )

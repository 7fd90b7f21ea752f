"""The documentation cannot drift: generated parts are current, every key is documented,
links resolve, and every command's help shows its defaults and an example."""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kongtaskd.cli import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, VERBS, build_parser
from kongtaskd.config import KEYS, Section
from kongtaskd.docgen import GENERATED_BY, render
from kongtaskd.errors import ExitCode

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


# --- claims the docs make about the code, checked against the code ----------------------------
#
# Every page a user reads (README, docs/, perf/README.md) names commands, flags, exit codes,
# metrics, configuration keys, environment variables and files. Each test below takes those
# names out of the text and looks them up in the code, so a renamed flag or a removed metric
# fails here instead of misleading a reader.

PAGES = [*MARKDOWN, REPO / "perf" / "README.md"]

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SPAN = re.compile(r"`([^`\n]+)`")


@dataclass(frozen=True)
class Snippet:
    """One piece of code in a page: an inline `span` or a fenced block, and where it is."""

    page: Path
    line: int
    text: str
    language: str  # "" for inline spans

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def snippets(pages: list[Path] = PAGES) -> Iterator[Snippet]:
    for page in pages:
        text = page.read_text()
        blocks = list(_FENCE.finditer(text))
        for block in blocks:
            line = text.count("\n", 0, block.start(2)) + 1
            yield Snippet(page, line, block.group(2), block.group(1))
        prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for span in _SPAN.finditer(prose):
            yield Snippet(page, prose.count("\n", 0, span.start()) + 1, span.group(1), "")


# -- command lines ----------------------------------------------------------------------------

#: Shell words that end one command and start the next.
_SEPARATORS = {"|", "||", "&&", ";", "&", "$(", "(", ")", "<", ">", ">>", "2>&1"}
#: Placeholders the docs write in place of a verb.
_PLACEHOLDERS = {"VERB", "ACTION"}
#: ``python -m kongtaskd.embedded ACTION``: the embedded server's own command line.
_EMBEDDED = "kongtaskd.embedded"


def command_lines(snippet: Snippet) -> Iterator[list[str]]:
    """The words of each ``kongtaskd ...`` command in ``snippet``: shell code blocks line by
    line (comments dropped), inline spans whole (``[--flag]``, ``a\\|b`` notation kept)."""
    if snippet.language not in ("", "sh", "bash", "shell"):
        return
    text = snippet.text.replace("\\\n", " ")
    for raw in text.splitlines():
        # In a block `#` starts a comment; in a table cell ` \| ` separates alternatives.
        line = re.sub(r"(^|\s)#.*$", "", raw) if snippet.language else raw.replace(" \\| ", " ")
        line = line.replace("$(", " $( ").replace(")", " ) ")
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        command: list[str] = []
        for word in [*words, ";"]:
            if word in _SEPARATORS:
                program = _program(command)
                if program:
                    yield program
                command = []
            else:
                command.append(word)


def _program(words: list[str]) -> list[str] | None:
    """``words`` from the kongtaskd program on (after sudo, env assignments, systemd-run,
    ``python -m``; ``python -m kongtaskd.embedded`` as ``kongtaskd.embedded``), or None
    when the command is something else."""
    rest = list(words)
    while rest:
        head = rest[0]
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", head) or head in ("exec", "env"):
            rest = rest[1:]
        elif head in ("sudo", "systemd-run"):
            rest = rest[1:]
            while rest and rest[0].startswith("-"):
                takes_value = rest[0] in ("-u", "-g", "-p", "--property", "--unit")
                rest = rest[2:] if takes_value else rest[1:]
        elif head in ("python", "python3") and rest[1:2] == ["-m"]:
            module = rest[2:3]
            return [*module, *rest[3:]] if module in (["kongtaskd"], [_EMBEDDED]) else None
        else:
            break
    if rest and Path(rest[0]).name == "kongtaskd":
        return ["kongtaskd", *rest[1:]]
    return None


def _option_name(word: str) -> str | None:
    """``[--flag]``, ``--flag=X``, ``--flag,`` -> ``--flag``; None for a non-option word."""
    word = word.strip("[](),.").split("=", 1)[0]
    if re.fullmatch(r"--?[A-Za-z][\w-]*", word):
        return word
    return None


def check_command(words: list[str]) -> list[str]:
    """Problems with one documented ``kongtaskd ...`` command: an unknown verb, action or
    option. Alternatives written ``a\\|b`` are each checked."""
    parser: argparse.ArgumentParser = build_parser()
    if words[0] == _EMBEDDED:
        from kongtaskd.embedded import _parser

        parser = _parser()
    name = words[0]
    problems: list[str] = []
    rest = words[1:]
    while rest:
        word = rest.pop(0)
        option = _option_name(word)
        if option is not None:
            action = parser._option_string_actions.get(option)
            if action is None:
                problems.append(f"'{name}' has no option {option}")
            elif action.nargs != 0 and "=" not in word and rest:
                rest.pop(0)  # its value
            continue
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            continue  # a positional argument (TASK, ID, PATH): its value is the user's
        choices = subparsers[0].choices
        alternatives = [w.strip("[]") for w in re.split(r"\\?\|", word) if w.strip("[]")]
        if not alternatives or alternatives[0] in _PLACEHOLDERS:
            return problems  # `kongtaskd VERB --help`: stands for every verb
        if alternatives[0] not in choices:
            if name == "kongtaskd" and not re.fullmatch(r"[a-z][a-z-]*", alternatives[0]):
                continue  # not a verb: a value (the daemon takes no positional argument)
            problems.append(f"'{name}' has no verb/action {alternatives[0]!r}")
            return problems
        for other in alternatives[1:]:
            if other not in choices:
                problems.append(f"'{name}' has no verb/action {other!r}")
        name = f"{name} {alternatives[0]}"
        parser = choices[alternatives[0]]
        if name == f"{_EMBEDDED} psql":
            return problems  # the rest is psql's
    return problems


def documented_commands() -> list[tuple[Snippet, list[str]]]:
    return [(s, words) for s in snippets() for words in command_lines(s)]


def test_the_docs_name_kongtaskd_commands() -> None:
    # The extraction itself works: these are in the README's command table and tutorial.
    shown = {" ".join(words[:3]) for _, words in documented_commands()}
    assert {"kongtaskd jobs list", "kongtaskd add hello", "kongtaskd migrate [-c"} <= shown
    assert "kongtaskd.embedded uri -D" in shown


@pytest.mark.parametrize(
    ("snippet", "words"),
    documented_commands(),
    ids=[f"{s.where}:{' '.join(w)[:60]}" for s, w in documented_commands()],
)
def test_every_documented_command_exists(snippet: Snippet, words: list[str]) -> None:
    problems = check_command(words)
    assert not problems, f"{snippet.where}: `{' '.join(words)}`: {'; '.join(problems)}"


def test_every_verb_is_in_the_readme_command_table() -> None:
    table = (REPO / "README.md").read_text().split("## Command line", 1)[1].split("\n\n", 2)[1]
    for verb in VERBS:
        if verb.name == "run":
            continue  # `kongtaskd -c FILE`: the default verb
        assert f"`kongtaskd {verb.name}" in table, f"README command table lacks {verb.name!r}"


def test_the_perf_options_table_matches_perf_run() -> None:
    page = (REPO / "perf" / "README.md").read_text()
    documented = set(re.findall(r"^\| `(--[a-z-]+)", page, re.MULTILINE))
    shown = subprocess.run(
        [sys.executable, str(REPO / "perf" / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    real = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", shown)) - {"--help"}
    assert documented == real, (
        f"perf/README.md options table: missing {sorted(real - documented)}, "
        f"not in perf/run.py {sorted(documented - real)}"
    )


# -- exit codes -------------------------------------------------------------------------------


def exit_codes() -> set[int]:
    return {int(code) for code in ExitCode} | {EXIT_INTERRUPTED, EXIT_BROKEN_PIPE}


def test_the_exit_code_table_lists_every_code_and_no_other() -> None:
    page = (DOCS / "operations.md").read_text()
    table = page.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    assert documented == exit_codes(), (
        f"docs/operations.md exit codes {sorted(documented)}, the code has {sorted(exit_codes())}"
    )


def test_the_readme_and_the_help_list_every_exit_code() -> None:
    readme = (REPO / "README.md").read_text()
    paragraph = readme.split("Exit codes: ", 1)[1].split("\n\n", 1)[0]
    documented = {int(code) for code in re.findall(r"`(\d+)`", paragraph)}
    assert documented == exit_codes(), f"README exit codes {sorted(documented)}"
    epilog = build_parser().epilog or ""
    in_help = {int(code) for code in re.findall(r"(\d+) [a-z]", epilog.split("exit codes:")[1])}
    assert in_help == exit_codes(), f"'kongtaskd --help' exit codes {sorted(in_help)}"


def test_the_codes_systemd_does_not_restart_on_are_the_documented_ones() -> None:
    page = (DOCS / "operations.md").read_text()
    table = page.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    not_restarted = {
        int(code)
        for code, systemd in re.findall(r"^\| (\d+) \|.*\| ([^|]*) \|$", table, re.MULTILINE)
        if "not restarted" in systemd
    }
    unit = (REPO / "systemd" / "kongtaskd.service").read_text()
    prevented = re.search(r"^RestartPreventExitStatus=(.*)$", unit, re.MULTILINE)
    assert prevented is not None
    assert {int(code) for code in prevented.group(1).split()} == not_restarted, (
        f"systemd/kongtaskd.service RestartPreventExitStatus={prevented.group(1)}, but "
        f"docs/operations.md says {sorted(not_restarted)} are not restarted"
    )
    assert f"RestartPreventExitStatus={prevented.group(1)}" in page


# -- metrics ----------------------------------------------------------------------------------


def metric_names() -> dict[str, set[str]]:
    """Metric family -> the names it is scraped under (``_total``, ``_bucket``, ...)."""
    from kongtaskd.metrics import Metrics

    names: dict[str, set[str]] = {}
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("", "_bucket", "_sum", "_count"),
            "gauge": ("",),
        }[family.type]
        names[family.name] = {family.name + suffix for suffix in suffixes}
    return names


def sql_functions() -> set[str]:
    schema = REPO / "kongtaskd" / "schema" / "kongtaskd"
    found: set[str] = set()
    for file in schema.glob("*.sql"):
        found |= set(re.findall(r"function \{\{schema\}\}\.(\w+)", file.read_text()))
    return found


def plugin_names() -> set[str]:
    """The fixtures and ini options of the pytest plugin kongtaskd/testing.py
    (``kongtaskd_db``, ``kongtaskd_dsn``: not metrics)."""
    text = (REPO / "kongtaskd" / "testing.py").read_text()
    fixtures = {
        node.name
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef)
        and any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)
    }
    return fixtures | set(re.findall(r'addini\(\s*"(\w+)"', text))


def documented_metrics() -> Iterator[tuple[Snippet, str]]:
    """Metric names in inline spans; ``_succeeded_total`` after ``kongtaskd_jobs_started_total``
    on the same line is short for ``kongtaskd_jobs_succeeded_total``."""
    functions = sql_functions() | plugin_names()
    prefix = ""
    for snippet in snippets():
        if snippet.language:
            continue
        name = snippet.text.split("{", 1)[0]
        if re.fullmatch(r"kongtaskd_[a-z0-9_]+", name) and name not in functions:
            prefix = name.rsplit("_", 2)[0]
            yield snippet, name
        elif re.fullmatch(r"_[a-z0-9_]+_total", name) and prefix:
            yield snippet, prefix + name


def test_every_documented_metric_exists() -> None:
    real = set().union(*metric_names().values())
    found = list(documented_metrics())
    assert len(found) >= 10  # the extraction works
    wrong = [f"{s.where}: {name}" for s, name in found if name not in real]
    assert not wrong, f"metrics the docs name but metrics.py does not have: {wrong}"


def test_every_metric_is_in_the_operations_table() -> None:
    page = (DOCS / "operations.md").read_text()
    first = page[: page.index("## Metrics")].count("\n") + 1
    last = first + page.split("## Metrics", 1)[1].split("\n## ", 1)[0].count("\n")
    documented = {
        name
        for s, name in documented_metrics()
        if s.page.name == "operations.md" and first <= s.line <= last
    }
    for family, names in metric_names().items():
        assert names & documented, f"docs/operations.md: metric {family} is not in the table"


# -- configuration keys and environment variables ---------------------------------------------


def key_paths() -> set[str]:
    return {path for path, _ in all_keys()}


def test_every_yaml_example_loads(tmp_path: Path) -> None:
    """Each ```yaml block in the docs is a valid configuration (keys, types, crontab)."""
    from kongtaskd.config import load_config
    from kongtaskd.cron import load_crontab
    from kongtaskd.errors import KongtaskError

    blocks = [s for s in snippets() if s.language == "yaml"]
    assert len(blocks) >= 4
    for number, block in enumerate(blocks):
        file = tmp_path / f"example{number}.yaml"
        file.write_text(block.text)
        try:
            config = load_config(file, environ={})
            load_crontab(config)
        except KongtaskError as error:
            pytest.fail(f"{block.where}: the example does not load: {error.message}")


_YAML_KEY = re.compile(r"([a-z][a-z0-9_]*):(?: (.*))?")


def test_every_inline_configuration_key_exists(tmp_path: Path) -> None:
    """`key:` and `key: value` in prose are configuration; `section.key` names a sub-key."""
    from kongtaskd.config import load_config
    from kongtaskd.errors import KongtaskError

    sections = {key.name for key in KEYS if isinstance(key.type, Section)}
    wrong: list[str] = []
    checked = 0
    for snippet in snippets():
        if snippet.language:
            continue
        text = snippet.text
        dotted = re.fullmatch(r"([a-z_]+)\.([a-z_]+)", text)
        if dotted and dotted.group(1) in sections and not text.endswith(_EXTENSIONS):
            checked += 1
            if text not in key_paths():
                wrong.append(f"{snippet.where}: {text} is no configuration key")
            continue
        fragment = _YAML_KEY.fullmatch(text)
        if not fragment:
            continue
        checked += 1
        if fragment.group(1) == "kongtaskd":
            continue  # `kongtaskd: <message>`: an error line, not configuration
        if fragment.group(1) not in key_paths():
            wrong.append(f"{snippet.where}: {fragment.group(1)}: is no configuration key")
        elif fragment.group(2) and not re.search(r"<|\b[A-Z]+\b", fragment.group(2)):
            # A value, not a placeholder (`concurrency: N`, `embedded:PATH`, `<what>`).
            file = tmp_path / "fragment.yaml"
            file.write_text(text + "\n")
            try:
                load_config(file, environ={})
            except KongtaskError as error:
                wrong.append(f"{snippet.where}: `{text}` does not load: {error.message}")
    assert checked >= 20  # the extraction works
    assert not wrong, "\n".join(wrong)


def test_documented_defaults_in_parentheses_are_the_real_ones() -> None:
    """`shutdown_timeout` (30 s) and the like, anywhere in the docs."""
    defaults = {key.name: key.default for key in KEYS}
    found = 0
    for page in PAGES:
        text = page.read_text()
        for name, value in re.findall(r"`([a-z_]+)`\s+\((\d+(?:\.\d+)?) ?s\)", text):
            if name in defaults:
                found += 1
                assert float(value) == float(defaults[name]), (
                    f"{page.relative_to(REPO)}: `{name}` ({value} s), the default is "
                    f"{defaults[name]}"
                )
    assert found >= 3


def test_every_environment_variable_named_exists() -> None:
    from kongtaskd.config import env_variables

    real = set(env_variables()) | {"KONGTASK_<KEY>"}
    # The test suite's and the benchmarks' own variables: named in their code.
    for source in [*(REPO / "tests").rglob("*.py"), *(REPO / "perf").glob("*.py")]:
        if "node_modules" not in source.parts:
            real |= set(re.findall(r"KONGTASK_[A-Z_]+", source.read_text()))
    pages = [*PAGES, REPO / "conf" / "kongtask.yaml", *(REPO / "systemd").iterdir()]
    for page in pages:
        for name in re.findall(r"KONGTASK_[A-Z_<>]+", page.read_text()):
            assert name in real, f"{page.relative_to(REPO)}: {name} is read by nothing"


# -- files ------------------------------------------------------------------------------------

_PATHLIKE = re.compile(r"[\w.][\w.*-]*(?:/[\w.*-]*)*")  # not `*/5`: cron
_EXTENSIONS = (".py", ".sql", ".yaml", ".md", ".json", ".service", ".default", ".cjs", ".mjs")


def repository_files() -> list[str]:
    skip = {".git", "node_modules", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
    return [
        path.relative_to(REPO).as_posix()
        for path in REPO.rglob("*")
        if path.is_file() and not skip & set(path.relative_to(REPO).parts)
    ]


def mentioned_files() -> Iterator[tuple[Snippet, str]]:
    """Inline spans that are a repository path (``kongtaskd/sql/settle.sql``, ``examples/``,
    ``sql/queue_jobs.sql``); system paths (``/etc/...``, ``~/...``) are not the repo's."""
    for snippet in snippets():
        if snippet.language or not _PATHLIKE.fullmatch(snippet.text):
            continue
        text = snippet.text
        if ("/" in text and not text.startswith(".")) or text.endswith(_EXTENSIONS):
            yield snippet, text


def exists_in_repository(path: str, files: list[str]) -> bool:
    """``path`` is a file or directory of the repository, written from its root or from
    any directory in it (``sql/settle.sql`` is kongtaskd's); ``*`` globs, ``000001-000020``
    ranges."""
    ranged = re.fullmatch(r"(.*?)(\d+)-(\d+)(\.\w+)", path)
    if ranged:
        start, end = ranged.group(2), ranged.group(3)
        head, tail = ranged.group(1), ranged.group(4)
        return all(exists_in_repository(f"{head}{n}{tail}", files) for n in (start, end))
    pattern = path.rstrip("/")
    for file in files:
        for candidate in (file, *(file.rsplit("/", n)[0] for n in range(1, file.count("/") + 1))):
            if fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, f"*/{pattern}"):
                return True
    return False


def test_every_file_the_docs_name_exists() -> None:
    from kongtaskd import starter

    files = repository_files()
    # What the reader makes: `kongtaskd init`'s files, the tutorial's outbox, `npm ci`'s.
    made_by_the_reader = {
        starter.CONFIG_FILE,
        starter.HANDLERS_FILE,
        "outbox/3.eml",
        "tests/interop/node_modules",
    }
    found = list(mentioned_files())
    assert len(found) >= 20  # the extraction works
    missing = [
        f"{s.where}: {path}"
        for s, path in found
        if path not in made_by_the_reader and not exists_in_repository(path, files)
    ]
    assert not missing, f"the docs name files that do not exist: {missing}"


# -- the module map ---------------------------------------------------------------------------


def module_rows() -> dict[str, str]:
    """architecture.md's module table: module -> its 'used by' cell."""
    page = (DOCS / "architecture.md").read_text()
    table = page.split("## Modules", 1)[1].split("\n\n", 2)[1]
    return dict(re.findall(r"^\| `([a-z_]+)\.py`.*\| ([^|]+) \|$", table, re.MULTILINE))


def imported_by(module: str) -> set[str]:
    """The package's modules whose source imports ``kongtaskd.<module>``."""
    users: set[str] = set()
    for file in (REPO / "kongtaskd").glob("*.py"):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "kongtaskd":
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module.removeprefix("kongtaskd.").split(".")[0]}
            elif isinstance(node, ast.Import):
                names = {a.name.removeprefix("kongtaskd.").split(".")[0] for a in node.names}
            else:
                continue
            if module in names:
                users.add(file.stem)
    return users


def test_the_module_map_has_every_module() -> None:
    rows = module_rows()
    for file in (REPO / "kongtaskd").glob("*.py"):
        if file.stem not in ("__init__", "__main__"):
            assert file.stem in rows, f"docs/architecture.md: no row for kongtaskd/{file.name}"


def test_the_module_map_says_who_uses_what() -> None:
    modules = {file.stem for file in (REPO / "kongtaskd").glob("*.py")}
    for module, cell in module_rows().items():
        # "cli (`cleanup`), child": the modules named, each before its parenthesis.
        named = {part.split("(")[0].strip() for part in cell.split(",")} & modules
        wrong = named - imported_by(module)
        assert not wrong, f"docs/architecture.md: {sorted(wrong)} do not import {module}.py"


# -- internal timings the docs quote ----------------------------------------------------------

#: Phrases that quote a tunable, and the tunable (kongtaskd/tunables.py) they quote.
_QUOTED_TUNABLES: tuple[tuple[str, str], ...] = (
    (r"(\d+(?:\.\d+)?) s kill grace", "CHILD_KILL_GRACE"),
    (r"SIGKILL after (\d+(?:\.\d+)?) s", "CHILD_KILL_GRACE"),
    (r"SIGKILL (\d+(?:\.\d+)?) s later", "CHILD_KILL_GRACE"),
    (r"(\d+) children in a row die", "CHILD_RAPID_DEATH_LIMIT"),
    (r"die within (\d+(?:\.\d+)?) s of their start", "CHILD_RAPID_DEATH_WINDOW"),
    (r"died within (\d+(?:\.\d+)?) s of its start", "CHILD_RAPID_DEATH_WINDOW"),
    (r"counted at most every (\d+(?:\.\d+)?) s", "METRICS_QUEUE_DEPTH_EVERY"),
    (r"write them for (\d+(?:\.\d+)?) s, then logs", "FINAL_FLUSH_DEADLINE"),
)


def test_timings_the_docs_quote_are_the_tunables() -> None:
    from kongtaskd import tunables

    pages = [*PAGES, *(REPO / "systemd").iterdir(), REPO / "conf" / "kongtask.yaml"]
    quoted: set[str] = set()
    for page in pages:
        text = " ".join(page.read_text().split())  # phrases may wrap
        for pattern, name in _QUOTED_TUNABLES:
            for value in re.findall(pattern, text):
                quoted.add(name)
                real = getattr(tunables, name)
                assert float(value) == float(real), (
                    f"{page.relative_to(REPO)}: /{pattern}/ quotes {value}, "
                    f"tunables.{name} is {real}"
                )
    assert len(quoted) >= 5  # the phrases are still there to check


def test_the_stop_timeout_the_docs_quote_is_the_units_and_outlasts_a_drain() -> None:
    from kongtaskd import tunables

    unit = (REPO / "systemd" / "kongtaskd.service").read_text()
    match = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert match is not None
    stop = int(match.group(1))
    shutdown = next(key.default for key in KEYS if key.name == "shutdown_timeout")
    assert stop > shutdown + tunables.CHILD_KILL_GRACE
    for page in PAGES:
        for value in re.findall(r"TimeoutStopSec=(\d+)", page.read_text()):
            assert int(value) == stop, f"{page.relative_to(REPO)}: TimeoutStopSec={value}"


# -- signals ----------------------------------------------------------------------------------


def test_the_signal_tables_cover_every_signal_the_supervisor_handles() -> None:
    from kongtaskd.supervisor import HANDLED_SIGNALS

    handled = {s.name for s in HANDLED_SIGNALS} - {"SIGCHLD"}  # SIGCHLD only wakes the loop
    for page, heading in (
        (REPO / "README.md", "## Signals"),
        (DOCS / "operations.md", "## Signals"),
    ):
        table = page.read_text().split(heading, 1)[1].split("\n\n", 2)[1]
        documented = set(re.findall(r"`(SIG[A-Z]+)`", table))
        assert documented == handled, (
            f"{page.relative_to(REPO)} signal table names {sorted(documented)}, the supervisor "
            f"handles {sorted(handled)}"
        )


def test_the_signals_children_ignore_are_the_documented_ones() -> None:
    source = (REPO / "kongtaskd" / "child.py").read_text()
    ignored = set(re.findall(r"signal\.signal\(signal\.(SIG[A-Z]+), signal\.SIG_IGN\)", source))
    page = (DOCS / "operations.md").read_text()
    sentence = " ".join(page.split("Children ignore ", 1)[1].split("(", 1)[0].split())
    assert set(re.findall(r"`(SIG[A-Z]+)`", sentence)) == ignored, (
        f"docs/operations.md: 'Children ignore {sentence}', child.py ignores {sorted(ignored)}"
    )

"""The configuration examples in the README load as they are written."""

from __future__ import annotations

from pathlib import Path

from kongtaskd.config import load_config
from kongtaskd.cron import load_crontab

README = Path(__file__).resolve().parents[2] / "README.md"


def yaml_block_after(heading: str) -> str:
    section = README.read_text().split(f"\n{heading}\n", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_cron_example_parses(tmp_path: Path):
    config = tmp_path / "kongtask.yaml"
    config.write_text(yaml_block_after("## Cron") + "tasks: {hello: 'm:f', send_email: 'm:g'}\n")
    items = load_crontab(load_config(config))
    assert [(item.identifier, item.task) for item in items] == [
        ("hello", "hello"),
        ("nightly", "send_email"),
    ]


def test_the_metrics_example_parses(tmp_path: Path):
    config = tmp_path / "kongtask.yaml"
    config.write_text(yaml_block_after("## Metrics"))
    metrics = load_config(config).metrics
    assert metrics is not None and (metrics.host, metrics.port) == ("127.0.0.1", 9464)

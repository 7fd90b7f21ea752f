"""The shipped unit file: systemd-analyze accepts it and it keeps the promised settings."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kongtaskd.errors import ExitCode

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "kongtaskd.service"


def service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return dict(parser["Service"])


def test_unit_keeps_the_lifecycle_contract():
    service = service_section()
    assert service["Type"] == "notify"
    assert service["KillMode"] == "mixed"
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    assert service["ExecStart"].endswith("kongtaskd -c /etc/kongtask.yaml")
    assert service["Restart"] == "on-failure"
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == {ExitCode.USAGE, ExitCode.SCHEMA_TOO_NEW}
    # A SIGTERM during start-up's migration exits 130 (rolled back): a clean stop.
    assert {int(code) for code in service["SuccessExitStatus"].split()} == {ExitCode.INTERRUPTED}
    # The daemon's own drain (shutdown_timeout 30 s by default + 5 s kill grace) must end
    # before systemd's SIGKILL.
    assert int(service["TimeoutStopSec"]) > 35
    assert service["User"] and service["User"] != "root"
    assert service["EnvironmentFile"] == "-/etc/default/kongtaskd"
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[option] == "yes"
    assert service["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    # verify checks that ExecStart exists: point it at this environment's kongtaskd.
    executable = shutil.which("kongtaskd") or f"{sys.executable} -m kongtaskd"
    text = UNIT.read_text().replace("/usr/local/bin/kongtaskd", executable)
    unit = tmp_path / "kongtaskd.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "kongtaskd.service" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


WEB_UNIT = UNIT.with_name("kongtaskd-web.service")


def test_the_web_unit_runs_the_dashboard_as_its_own_notify_service():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(WEB_UNIT)
    service = dict(parser["Service"])
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["ExecStart"].endswith("kongtaskd -c /etc/kongtask.yaml web")
    assert {int(code) for code in service["RestartPreventExitStatus"].split()} == {ExitCode.USAGE}
    assert service["User"] and service["User"] != "root"
    assert service["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_web_unit(tmp_path: Path):
    executable = shutil.which("kongtaskd") or f"{sys.executable} -m kongtaskd"
    unit = tmp_path / "kongtaskd-web.service"
    unit.write_text(WEB_UNIT.read_text().replace("/usr/local/bin/kongtaskd", executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "kongtaskd-web.service" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr

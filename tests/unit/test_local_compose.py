"""docker-compose.yml and the executor Dockerfiles run commands that really exist, in seconds.

tests/containers/ builds nothing but runs the images and the stack for real; this module is
the fast check of the same files as data: every argv a container would run is resolved (the
service's entrypoint/command over the image's ENTRYPOINT/CMD) and fed to the real CLI with
``--help`` appended — click still rejects an unknown subcommand or option, but stops before
acting. Scripts are run with ``--help`` too, and mounted files are validated as the container
would read them.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hyperpool.cli import _register_optional_commands, cli
from hyperpool.local.manifests import pools_from_manifests
from hyperpool.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILES = {"generic": REPO / "executors/generic/Dockerfile",
               "montage": REPO / "executors/montage/Dockerfile"}
APP_DIR = "/opt/hyperpool"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def exec_form(dockerfile: Path, keyword: str) -> list[str]:
    values = [rest for kw, rest in instructions(dockerfile) if kw == keyword]
    assert len(values) == 1, f"{dockerfile}: one {keyword} expected"
    argv = json.loads(values[0])  # exec form: a JSON array, so signals reach the process
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def service_dockerfile(name: str) -> Path:
    service = SERVICES[name]
    if "build" in service:
        return REPO / service["build"]["dockerfile"]
    image = service["image"]
    builders = [s for s in SERVICES.values() if s.get("image") == image and "build" in s]
    assert builders, f"service {name}: image {image} is built by no service"
    return REPO / builders[0]["build"]["dockerfile"]


def effective_argv(name: str) -> list[str]:
    """What the container of service ``name`` runs (compose over Dockerfile defaults)."""
    service = SERVICES[name]
    if not service["image"].startswith("hyperpool/executor-"):
        raise ValueError("not one of our images")
    dockerfile = service_dockerfile(name)
    entrypoint = (service["entrypoint"] if "entrypoint" in service
                  else exec_form(dockerfile, "ENTRYPOINT"))
    command = service["command"] if "command" in service else exec_form(dockerfile, "CMD")
    return [*entrypoint, *command]


def our_services() -> list[str]:
    """The services running hyperpool itself (the executor image), not the broker & co."""
    return [n for n, s in SERVICES.items()
            if s.get("image", "").startswith("hyperpool/executor-")]


def check_cli(argv: list[str]) -> str:
    """Run our CLI with ``--help`` appended; fails on unknown commands or options."""
    assert argv[0] == "hyperpool", argv
    _register_optional_commands()
    result = CliRunner().invoke(cli, [*argv[1:], "--help"], prog_name="hyperpool",
                                catch_exceptions=False)
    assert result.exit_code == 0, f"{shlex.join(argv)}: {result.output}"
    return result.output


def test_the_method_catches_unknown_options_and_commands():
    _register_optional_commands()
    for bogus in (["pools", "up", "--bogus"], ["pools", "down"], ["run", "/w", "--pool"]):
        result = CliRunner().invoke(cli, [*bogus, "--help"])
        assert result.exit_code == 2, bogus


def test_compose_has_the_services_of_a_local_run():
    assert {"rabbitmq", "redis", "prometheus", "pools", "example", "engine"} <= set(SERVICES)
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


@pytest.mark.parametrize("name", ["pools", "engine"])
def test_every_hyperpool_command_in_compose_exists(name):
    argv = effective_argv(name)
    usage = check_cli(argv)
    subcommand = " ".join(a for a in argv[1:3] if not a.startswith("-") and "/" not in a)
    assert usage.startswith(f"Usage: hyperpool {subcommand}")


def test_the_supervisor_runs_pools_up_on_the_mounted_manifests():
    argv = effective_argv("pools")
    assert argv[:3] == ["hyperpool", "pools", "up"]
    manifest = argv[argv.index("-f") + 1]
    mounts = {target: source for source, target, *_ in
              (volume.split(":") for volume in SERVICES["pools"]["volumes"])
              if source.startswith("./")}
    target = next(t for t in mounts if manifest.startswith(t + "/"))
    host_file = REPO / mounts[target] / Path(manifest).relative_to(target)
    pools = pools_from_manifests([host_file], "default")
    assert {p.task_type for p in pools} >= {"mProject", "mDiffFit", "mBackground"}


def test_the_engine_runs_the_example_without_local_pools():
    argv = effective_argv("engine")
    assert argv[:3] == ["hyperpool", "run", "/work"] and "--no-local-pools" in argv
    assert SERVICES["engine"]["depends_on"]["example"]["condition"] == \
        "service_completed_successfully"


def test_the_example_scripts_exist_in_the_image_and_run():
    argv = effective_argv("example")
    assert argv[:2] == ["sh", "-c"]
    steps = [shlex.split(part) for part in argv[2].split("&&")]
    copied = [rest.split()[0] for kw, rest in instructions(service_dockerfile("example"))
              if kw == "COPY"]
    for step in steps:
        assert step[0] in ("python3", "python") and step[1].startswith(APP_DIR + "/")
        relative = Path(step[1]).relative_to(APP_DIR)
        assert (REPO / relative).is_file(), relative
        assert relative.parts[0] in copied, f"{relative} is not copied into the image"
        shown = subprocess.run([sys.executable, str(REPO / relative), "--help"],
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "usage:" in shown.stdout, shown.stderr


def test_dockerfile_entrypoint_is_the_pool_worker():
    """The generic image's; the Montage image is built FROM it (see below)."""
    dockerfile = DOCKERFILES["generic"]
    entrypoint, cmd = exec_form(dockerfile, "ENTRYPOINT"), exec_form(dockerfile, "CMD")
    assert entrypoint == ["hyperpool", "worker"]
    assert check_cli([*entrypoint, *cmd]).startswith("Usage: hyperpool worker")
    steps = instructions(dockerfile)
    for keyword, rest in steps:
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), f"{dockerfile}: COPY {source} is missing"
    runs = " ".join(rest for kw, rest in steps if kw == "RUN")
    assert "pip install ." in runs
    assert ("USER", "1000") in steps, "workers do not run as root (uid 1000, as in the pods)"


def test_montage_image_has_the_montage_tools():
    steps = instructions(DOCKERFILES["montage"])
    runs = " ".join(rest for kw, rest in steps if kw == "RUN")
    assert re.search(r"apt-get install .*\bmontage montage-gridtools\b", runs)
    assert steps[:2] == [("ARG", "BASE=hyperpool/executor-generic:latest"), ("FROM", "${BASE}")]
    assert steps[-2:] == [("USER", "1000"), ("WORKDIR", "/work")], "tasks do not run as root"
    assert instructions(DOCKERFILES["generic"])[0][1].startswith("debian:")


def test_rabbitmq_has_the_plugins_and_prometheus_scrapes_broker_pools_and_engine():
    configs = COMPOSE["configs"]
    copied = {rest.split()[0]: rest.split()[1] for kw, rest in
              instructions(service_dockerfile("rabbitmq")) if kw == "COPY"}
    plugins = (REPO / "configs" / "rabbitmq-enabled-plugins").read_text()
    assert "rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins
    assert copied == {"configs/rabbitmq.conf": "/etc/rabbitmq/rabbitmq.conf",
                      "configs/rabbitmq-enabled-plugins": "/etc/rabbitmq/enabled_plugins",
                      "configs/rabbitmq-advanced.config": "/etc/rabbitmq/advanced.config"}
    # Quorum queues tick every 500 ms: the pools' unacknowledged counts are that fresh.
    assert "{quorum_tick_interval, 500}" in (REPO / "configs/rabbitmq-advanced.config").read_text()
    scrape = yaml.safe_load(configs["prometheus-config"]["content"])
    rabbit = next(j for j in scrape["scrape_configs"] if j["job_name"] == "rabbitmq")
    assert rabbit["metrics_path"] == "/metrics/per-object", "per-queue series for the dashboard"
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    pools_port = effective_argv("pools")[effective_argv("pools").index("--metrics-port") + 1]
    engine_port = effective_argv("engine")[effective_argv("engine").index("--metrics-port") + 1]
    assert targets == {"rabbitmq:15692", f"pools:{pools_port}", f"engine:{engine_port}"}


def test_compose_environment_is_what_settings_read():
    env = COMPOSE["x-hyperpool-env"]
    settings = load_settings(env)
    assert settings.broker_url == "amqp://guest:guest@rabbitmq:5672//"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.management_url == "http://rabbitmq:15672"
    assert settings.rabbitmq_metrics_url == "http://rabbitmq:15692"
    assert settings.work_dir == "/work"
    for name in our_services():
        assert SERVICES[name]["environment"] == env
        assert "${HYPERPOOL_WORK:-work}:/work" in SERVICES[name]["volumes"], (
            f"{name} shares the work dir")

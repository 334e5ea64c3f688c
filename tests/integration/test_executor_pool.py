"""Executor pools on the real RabbitMQ and Redis, with real ``hyperpool worker`` processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from hyperpool.executor.app import create_app
from hyperpool.executor.publisher import Publisher
from hyperpool.executor.queues import dead_letter_queue_name, task_queue
from hyperpool.executor.results import ResultReader, run_stream
from hyperpool.executor.tasks import REDIS_CONNECTIONS
from hyperpool.models import TaskMessage, TaskResult
from tests.conftest import hyperpool_env, queue_info, wait_for


class Run:
    """Publish messages to one queue and collect their results from a fresh stream."""

    def __init__(self, settings, redis_client, queue):
        self.queue = queue
        self.stream = run_stream(f"test-{uuid.uuid4().hex}")
        self.publisher = Publisher(settings)
        self.reader = ResultReader(redis_client, self.stream)
        self.redis = redis_client
        self.results: dict[str, TaskResult] = {}

    def send(self, task_id, **fields):
        msg = TaskMessage.model_validate({"taskId": task_id, **fields})
        self.publisher.publish(self.queue, msg, reply_to=self.stream)

    def wait(self, *task_ids, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not set(task_ids) <= set(self.results):
            assert time.monotonic() < deadline, f"no result for {set(task_ids) - set(self.results)}"
            for result in self.reader.read(block_ms=200):
                self.results.setdefault(result.task_id, result)
        return [self.results[t] for t in task_ids]

    def close(self):
        self.publisher.close()
        self.redis.delete(self.stream)


@pytest.fixture
def pool_run(settings, redis_client, namespace):
    run = Run(settings, redis_client, f"{namespace}.work")
    yield run
    run.close()


def test_command_round_trip(pool_run, start_worker, tmp_path):
    start_worker(pool_run.queue)
    pool_run.send("ok", executable="sh", args=["-c", "echo hi; echo warn >&2"], stdout="o.txt",
                  stderr="e.txt")
    pool_run.send("fail", executable="sh", args=["-c", "echo broken >&2; exit 3"])
    pool_run.send("pipe", executable="echo", args=["a", "|", "tr", "a", "b"], shell=True,
                  stdout="pipe.txt")
    pool_run.send("nopipe", executable="echo", args=["a", "|", "tr", "a", "b"],
                  stdout="nopipe.txt")
    pool_run.send("missing", executable="definitely-not-installed")
    ok, fail, pipe, nopipe, missing = pool_run.wait("ok", "fail", "pipe", "nopipe", "missing")
    assert ok.exit_code == 0 and ok.ok and ok.worker and ok.finished >= ok.started
    assert (tmp_path / "o.txt").read_text() == "hi\n"
    assert (tmp_path / "e.txt").read_text() == "warn\n"
    assert ok.stderr_tail == "warn\n"
    assert (tmp_path / "logs-hf" / "ok.1.stdout").read_text() == "hi\n"
    assert fail.exit_code == 3 and "broken" in fail.stderr_tail
    assert (tmp_path / "pipe.txt").read_text() == "b\n"
    assert (tmp_path / "nopipe.txt").read_text() == "a | tr a b\n"
    assert missing.exit_code == 127 and "executable not found" in missing.error
    info = queue_info(pool_run.queue)
    assert info["arguments"]["x-queue-type"] == "quorum" and info["durable"] is True


def test_sigkill_mid_task_is_redelivered_to_another_worker(pool_run, start_worker, tmp_path):
    first = start_worker(pool_run.queue)
    script = "echo start >> attempts.txt; sleep 1.5; echo done >> attempts.txt"
    pool_run.send("k", executable="sh", args=["-c", script])
    wait_for(lambda: (tmp_path / "attempts.txt").exists(), what="task start")
    first.signal(signal.SIGKILL)
    first.proc.wait()
    start_worker(pool_run.queue)
    (result,) = pool_run.wait("k", timeout=30)
    assert result.exit_code == 0
    assert (tmp_path / "attempts.txt").read_text().count("start") == 2


def test_slots_are_threads_of_the_worker_process(pool_run, start_worker, tmp_path):
    """-c 2: two commands at once, both children of the one worker process (no prefork
    children), told apart as two slots in their results."""
    worker = start_worker(pool_run.queue, concurrency=2)
    for name in ("a", "b"):
        pool_run.send(name, executable="sh", args=["-c", "echo $PPID >> pids.txt; sleep 1"])
    a, b = pool_run.wait("a", timeout=30)[0], pool_run.wait("b", timeout=30)[0]
    assert a.exit_code == 0 and b.exit_code == 0
    assert [int(p) for p in (tmp_path / "pids.txt").read_text().split()] == [worker.proc.pid] * 2
    assert a.started < b.finished and b.started < a.finished, "ran at the same time"
    assert a.worker != b.worker and {a.worker, b.worker} == {
        f"{a.worker.split('/')[0]}/{n}" for n in (1, 2)}


def test_slots_share_a_few_redis_connections(pool_run, start_worker):
    """24 slots finishing together report over at most REDIS_CONNECTIONS connections (a
    connection per slot thread cost the first wide stage of a fresh pool its start-up)."""
    worker = start_worker(pool_run.queue, concurrency=24)
    ids = [f"s{i}" for i in range(24)]
    pool_run.publisher.publish_many(
        [(pool_run.queue, TaskMessage(taskId=i, name="t", executable="true", stub_sleep=0.5), 1)
         for i in ids], reply_to=pool_run.stream)
    results = pool_run.wait(*ids, timeout=30)
    assert max(r.started for r in results) < min(r.finished for r in results), "all at once"
    redis_conns = [c for c in psutil.Process(worker.proc.pid).net_connections(kind="tcp")
                   if c.raddr and c.raddr.port == 6379]
    assert 1 <= len(redis_conns) <= REDIS_CONNECTIONS


def test_sigterm_lets_the_running_task_finish(pool_run, start_worker, tmp_path):
    worker = start_worker(pool_run.queue)
    pool_run.send("long", executable="sh", args=["-c", "touch started; sleep 2; echo fin"],
                  stdout="long.txt")
    pool_run.send("next", executable="true")
    wait_for(lambda: (tmp_path / "started").exists(), what="task start")
    worker.signal(signal.SIGTERM)
    (result,) = pool_run.wait("long")
    assert result.exit_code == 0 and (tmp_path / "long.txt").read_text() == "fin\n"
    assert worker.proc.wait(timeout=15) == 0
    assert "next" not in pool_run.results  # a draining worker takes no new task
    wait_for(lambda: queue_info(pool_run.queue).get("messages_ready") == 1, what="queued next")


def test_invalid_message_is_reported_and_dead_lettered(pool_run, start_worker, settings):
    start_worker(pool_run.queue)
    app = create_app(settings)
    app.send_task("hyperpool.run", args=[{"taskId": "bad", "args": "not-a-list"}],
                  kwargs={"reply_to": pool_run.stream},
                  queue=task_queue(pool_run.queue), routing_key=pool_run.queue,
                  exchange="hyperpool")
    pool_run.send("after", executable="true")
    bad, after = pool_run.wait("bad", "after")
    assert "invalid task message" in bad.error and "executable" in bad.error
    assert after.ok  # the queue is not blocked
    dead = dead_letter_queue_name(pool_run.queue)
    wait_for(lambda: (queue_info(dead) or {}).get("messages") == 1, what="dead-lettered message")
    app.close()


@pytest.mark.parametrize("variable,url,service", [
    ("HYPERPOOL_BROKER_URL", "amqp://guest:topsecret@127.0.0.1:1//", "RabbitMQ"),
    ("HYPERPOOL_REDIS_URL", "redis://:topsecret@127.0.0.1:1/0", "Redis"),
])
def test_unreachable_service_is_one_clear_line(tmp_path, namespace, variable, url, service):
    env = hyperpool_env(namespace, tmp_path, HYPERPOOL_CONNECT_TIMEOUT="2", **{variable: url})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hyperpool", "worker", "-Q", f"{namespace}.x"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert time.monotonic() - started < 15
    err = proc.stderr.strip()
    assert f"cannot reach {service} at" in err and "****" in err
    assert "topsecret" not in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("variable,url,code,advice", [
    ("HYPERPOOL_BROKER_URL", "amqp://guest:wrong@127.0.0.1:5672//", 3,
     "the login was refused: check the user and password"),
    ("HYPERPOOL_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/no-such-vhost", 3,
     "the vhost 'no-such-vhost' does not exist"),
    ("HYPERPOOL_BROKER_URL", "amqp://guest:guest@no-such-host.invalid:5672//", 3,
     "the host name 'no-such-host.invalid' does not resolve"),
    ("HYPERPOOL_BROKER_URL", "amqp://guest:guest@127.0.0.1:1//", 3,
     "start it with `rabbitmq-server -detached`"),
    ("HYPERPOOL_BROKER_URL", "notaurl", 2, "HYPERPOOL_BROKER_URL: 'notaurl' is not a RabbitMQ URL"),
    ("HYPERPOOL_BROKER_URL", "http://127.0.0.1:15672", 2, "is not a RabbitMQ URL: expected amqp://"),
    ("HYPERPOOL_REDIS_URL", "localhost:6379", 2, "is not a Redis URL: expected redis://"),
])
def test_each_connection_failure_gets_its_own_advice(tmp_path, namespace, variable, url, code,
                                                     advice):
    """The start-the-server hint only where nothing listens (it once came for a wrong password
    and for a URL that is not one too)."""
    env = hyperpool_env(namespace, tmp_path, HYPERPOOL_CONNECT_TIMEOUT="2", **{variable: url})
    proc = subprocess.run([sys.executable, "-m", "hyperpool", "worker", "-Q", f"{namespace}.x"],
                          env=env, capture_output=True, text=True, timeout=30)
    err = proc.stderr.strip()
    assert proc.returncode == code, err
    assert advice in err and "Traceback" not in err and len(err.splitlines()) == 1
    if "start it with" not in advice:
        assert "rabbitmq-server -detached" not in err


def test_poison_message_is_reported_and_dead_lettered(settings, redis_client, namespace,
                                                      start_worker, tmp_path):
    """A task that kills its worker process on every delivery must not block the queue.

    The worker is restarted whenever it dies, as the local supervisor or a Deployment would.
    One slot (prefetch 1): "fine" waits in the queue, so only the poison's deliveries count.
    A slot thread shares its process with the pool's other slots, so their in-flight tasks
    are redelivered too when a task kills the process itself (see executor/worker.py).
    """
    env = {"HYPERPOOL_DELIVERY_LIMIT": "3"}
    run = Run(settings.__class__(**{**settings.__dict__, "delivery_limit": 3}), redis_client,
              f"{namespace}.poison")
    workers = [start_worker(run.queue, **env)]
    run.send("poison", executable="sh", args=["-c", "echo x >> deliveries; kill -9 $PPID"])
    run.send("fine", executable="true")
    deadline = time.monotonic() + 90
    while not {"poison", "fine"} <= set(run.results):
        assert time.monotonic() < deadline, f"results so far: {set(run.results)}"
        if workers[-1].proc.poll() is not None:
            workers.append(start_worker(run.queue, wait=False, **env))  # may die at once
        for result in run.reader.read(block_ms=200):
            run.results.setdefault(result.task_id, result)
    poison, fine = run.results["poison"], run.results["fine"]
    assert fine.ok
    assert "poison message: delivered 3 times" in poison.error
    assert (tmp_path / "deliveries").read_text().count("x") == 2
    assert len(workers) == 3, "two deliveries killed their worker, the third was parked"
    dead = dead_letter_queue_name(run.queue)
    wait_for(lambda: (queue_info(dead) or {}).get("messages") == 1, what="dead-lettered poison")
    assert "poison" in workers[-1].text() and "dead-letter" in workers[-1].text()
    run.close()


def test_broker_lets_long_tasks_run():
    """`make services` raised consumer_timeout above RabbitMQ's 30 min default."""
    out = subprocess.run(["rabbitmqctl", "-q", "eval",
                          "application:get_env(rabbit, consumer_timeout)."],
                         capture_output=True, text=True, check=True).stdout
    assert int(out.strip().strip("{}").split(",")[1]) >= 24 * 3600 * 1000

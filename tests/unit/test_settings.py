from hyperpool.settings import (
    DEFAULT_BROKER_URL,
    DEFAULT_REDIS_URL,
    broker_url_from_rabbit_hostname,
    load_settings,
    mask_url,
)


def test_defaults():
    s = load_settings({})
    assert s.broker_url == DEFAULT_BROKER_URL
    assert s.redis_url == DEFAULT_REDIS_URL
    assert s.namespace == "default"
    assert s.queue_name is None


def test_own_variables_win_over_upstream_names():
    s = load_settings({
        "HYPERPOOL_BROKER_URL": "amqp://a:b@h1//", "RABBIT_HOSTNAME": "h2",
        "HYPERPOOL_REDIS_URL": "redis://r1:6379/1", "REDIS_URL": "redis://r2",
        "HYPERPOOL_NAMESPACE": "ns1", "HF_VAR_NAMESPACE": "ns2",
        "HYPERPOOL_QUEUE": "q1", "QUEUE_NAME": "q2",
    })
    assert (s.broker_url, s.redis_url, s.namespace, s.queue_name) == (
        "amqp://a:b@h1//", "redis://r1:6379/1", "ns1", "q1")


def test_upstream_hyperflow_names_are_honoured():
    s = load_settings({"RABBIT_HOSTNAME": "user:secret@rabbitmq.default", "REDIS_URL":
                       "redis://redis:6379", "HF_VAR_NAMESPACE": "montage", "QUEUE_NAME": "q"})
    assert s.broker_url == "amqp://user:secret@rabbitmq.default//"
    assert s.redis_url == "redis://redis:6379"
    assert s.namespace == "montage"
    assert s.queue_name == "q"
    assert s.management_url == "http://rabbitmq.default:15672"
    assert (s.management_user, s.management_password) == ("user", "secret")


def test_rabbit_hostname_forms():
    assert broker_url_from_rabbit_hostname("rabbitmq") == "amqp://guest:guest@rabbitmq//"
    assert broker_url_from_rabbit_hostname("r:5673") == "amqp://guest:guest@r:5673//"
    assert broker_url_from_rabbit_hostname("amqp://x@y//") == "amqp://x@y//"


def test_mask_url_hides_passwords_only():
    assert mask_url("amqp://guest:guest@127.0.0.1:5672//") == "amqp://guest:****@127.0.0.1:5672//"
    assert mask_url("redis://:s3cr3t@redis:6379/0") == "redis://:****@redis:6379/0"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "p@ss" not in mask_url("amqp://u:p@ss@host//")

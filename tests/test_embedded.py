"""One embedded server per state directory, whoever asks for it and however many at once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import redis

from dispatcher.embedded import EmbeddedRedis, pid_alive, read_server, running_server


def test_concurrent_commands_share_one_server_and_the_last_one_out_stops_it(tmp_path):
    users = [EmbeddedRedis(tmp_path) for _ in range(8)]
    urls: list[str] = []
    barrier = threading.Barrier(len(users))

    def join(user: EmbeddedRedis) -> None:
        barrier.wait()
        urls.append(user.start())

    threads = [threading.Thread(target=join, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(urls) == 8 and len(set(urls)) == 1, urls
    assert sum(u.started for u in users) == 1, "two commands started two servers"
    info = read_server(tmp_path / "redis")
    assert info is not None and pid_alive(info.pid)
    redis.Redis.from_url(urls[0]).set("kept", "yes")
    for u in users[:-1]:
        u.stop()
        assert running_server(tmp_path / "redis") == info, "stopped while still in use"
    users[-1].stop()
    assert not pid_alive(info.pid) and read_server(tmp_path / "redis") is None
    again = EmbeddedRedis(tmp_path)  # started again on the same data (AOF)
    try:
        assert redis.Redis.from_url(again.start()).get("kept") == b"yes"
        assert again.started
    finally:
        again.stop()


def test_a_server_left_by_a_killed_command_is_adopted_then_stopped(tmp_path):
    code = ("import os, sys; from pathlib import Path; from dispatcher.embedded import "
            "EmbeddedRedis; e = EmbeddedRedis(Path(sys.argv[1])); print(e.start()); "
            "sys.stdout.flush(); os._exit(0)")  # no stop(): as if killed
    url = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    info = read_server(tmp_path / "redis")
    assert info and info.url == url and pid_alive(info.pid)
    user = EmbeddedRedis(tmp_path)
    assert user.start() == url and not user.started
    user.stop()  # the only user left: it shuts the server down
    assert not pid_alive(info.pid)


def test_a_stale_server_file_is_replaced(tmp_path):
    data = tmp_path / "redis"
    data.mkdir()
    (data / "server.json").write_text(json.dumps({"port": 1, "pid": 999_999_999}))
    user = EmbeddedRedis(tmp_path)
    try:
        url = user.start()
        assert user.started and url != "redis://127.0.0.1:1/0"
        assert redis.Redis.from_url(url).ping()
    finally:
        user.stop()
    assert not (Path(data) / "server.json").exists()

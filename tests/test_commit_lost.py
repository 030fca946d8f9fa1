"""Issue 26 D2 on a real PostgreSQL server: the connection dies after the server committed a
write-behind group but before the client heard it. A proxy between nas and the server passes
the COMMIT on, waits for the server's answer, and drops the client's connection instead of
passing it back. The writer must raise (nothing is silently lost) and must not write the group
again (the server has it: a replay would duplicate the trial row, as D2 feared)."""

from __future__ import annotations

import socket
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from nas.data.config import DataConfig
from nas.db import Phase, Store, TrialStatus
from nas.db.schema import EpochResult, Trial
from nas.db.write_behind import WriteBehind
from nas.models.arch import ArchConfig
from nas.training.recipe import Recipe
from nas.trials.artifacts import TrialSetup
from nas.trials.recorder import TrialRecorder


class CommitCutter:
    """A TCP proxy to the server; once `armed`, the first COMMIT it sees reaches the server, and
    the server's answer closes the client's connection instead of reaching it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()  # a COMMIT's answer was swallowed
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            state = {"cutting": False}
            threading.Thread(target=self._to_server, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, state), daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        while data := _recv(client):
            if self.armed.is_set() and not self.cut.is_set() and b"COMMIT" in data.upper():
                state["cutting"] = True  # before it is sent: the answer cannot come first
            server.sendall(data)
        server.close()

    def _to_client(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        while data := _recv(server):
            if state["cutting"]:  # the server answered the COMMIT: it committed
                self.cut.set()
                client.shutdown(socket.SHUT_RDWR)
                client.close()
                server.close()
                return
            client.sendall(data)
        client.close()

    def close(self) -> None:
        self.listener.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _setup() -> TrialSetup:
    return TrialSetup(arch=ArchConfig(), recipe=Recipe(epochs=2), data_cfg=DataConfig(), seed=0)


@pytest.mark.postgres
def test_a_group_committed_by_the_server_whose_answer_was_lost_is_raised_and_not_written_twice(postgres_url):
    url = make_url(postgres_url)
    cutter = CommitCutter(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=cutter.port).render_as_string(hide_password=False)
    try:
        with Store.open(proxied) as store:
            experiment_id = store.ensure_experiment("e")
            writes = WriteBehind(store)
            gate = threading.Event()
            writes.submit(lambda: gate.wait(30), store=False)  # the group queues up behind this
            recorder = TrialRecorder(store, experiment_id, _setup(), Phase.SEARCH, costs=(1, 1), device="",
                                     writes=writes)
            for epoch in range(2):
                recorder.epoch(dict(epoch=epoch, train_loss=1.0, train_acc=0.5, val_acc=0.4 + epoch / 10,
                                    test_acc=None, epoch_seconds=1.0, cumulative_seconds=epoch + 1.0,
                                    val_images=5000, test_images=None))
            recorder.finish(TrialStatus.COMPLETED)
            cutter.armed.set()
            gate.set()
            with pytest.raises(Exception) as info:
                writes.flush()
            assert cutter.cut.is_set(), f"the proxy never cut a COMMIT's answer ({info.value!r})"
            assert "closed" in str(info.value).lower() or "connection" in str(info.value).lower(), info.value
            writes.close()  # the error was raised once, by flush
        with Store.open(postgres_url, read_only=True) as direct, direct.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(Trial)).scalar() == 1
            assert connection.execute(select(Trial.status)).scalar() == TrialStatus.COMPLETED
            assert connection.execute(select(func.count()).select_from(EpochResult)).scalar() == 2
    finally:
        cutter.close()

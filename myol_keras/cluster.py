"""A multi-worker cluster that agrees, never hangs and never loses the run (docs/DECISIONS.md §4.9).

What `--strategy=multi_worker` adds around TensorFlow's MultiWorkerMirroredStrategy
(docs/DISTRIBUTED.md has the user's view and the table of what survives what):

* `parse_tf_config`: TF_CONFIG checked whole before any TensorFlow op, one line per problem;
  `stray_tf_config_notice`: other strategies ignore it, so a single process always writes its run.
* `check_port` / `bind_like_grpc`: the probe binds as gRPC does (`SO_REUSEADDR`, every interface).
* `rendezvous`: the workers greet each other on their own ports, in Python, before TensorFlow starts
  (whose start holds the GIL while it waits), so the wait is bounded by `--cluster_timeout` (one line
  naming who is missing) and interruptible; a thread answers greetings, and a worker leaves once every
  other has said it is ready and been told this one is.
* `runtime_start`: TensorFlow's own start, bounded by a watchdog process.
* `install_stop_handlers`: SIGINT/SIGTERM wake a watchdog thread (`signal.set_wakeup_fd`) that prints
  one line, flushes and `os._exit(128 + signal)`s, also while the main thread blocks in a C++
  collective; checkpoints are renamed into place whole, so the last complete one is always intact.

The agreement before the first step and the chief's state (`agree`, `fingerprint`,
`broadcast_from_chief`, `chief_value`) are in `agreement.py`.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time

PROG = "myol_keras"
SUPPORTED_JOBS = ("chief", "worker")
#: seconds every worker has to arrive (`--cluster_timeout`'s default).
DEFAULT_CLUSTER_TIMEOUT = 300
#: settings that may differ between workers (paths on each machine, verbosity, local threads).
PER_WORKER_SETTINGS = ("data_dir", "cache_dir", "run_dir", "export_dir", "verbose", "threads", "download",
                       "overwrite", "cluster_timeout")
_HELLO = "MYOLRDV1"
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class ClusterError(RuntimeError):
    """The cluster did not assemble: a worker missing at the deadline."""


class SettingsDiffer(ValueError):
    """The workers were started with settings, data or code that differ."""


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """A checked `TF_CONFIG`: the cluster and this process' task in it.

    Args:
        cluster: job name (`chief`, `worker`) -> list of `host:port` addresses.
        task_type: this task's job.
        task_index: this task's index in its job.

    Example:
    ```python
    task = parse_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
    task.rank, task.is_chief  # (1, False)
    ```
    """

    cluster: dict
    task_type: str
    task_index: int

    @property
    def tasks(self):
        """`(type, index, address)` of every task in rank order (MultiWorkerMirroredStrategy's: chief first)."""
        return [(job, i, a) for job in SUPPORTED_JOBS for i, a in enumerate(self.cluster.get(job, []))]

    @property
    def rank(self):
        return [(job, i) for job, i, _ in self.tasks].index((self.task_type, self.task_index))

    @property
    def address(self):
        return self.cluster[self.task_type][self.task_index]

    @property
    def port(self):
        return split_address(self.address)[1]

    @property
    def is_chief(self):
        return self.rank == 0

    def name(self, rank=None):
        """`worker 1 (host:port)` for the task of `rank` (default: this one)."""
        job, index, address = self.tasks[self.rank if rank is None else rank]
        return f"{job} {index} ({address})"

    def digest(self):
        """A hash of the cluster list: every worker must hold the same."""
        return hashlib.sha1(json.dumps(self.cluster, sort_keys=True).encode()).hexdigest()[:16]


def split_address(address):
    """`"host:port"` -> `(host, port)`; raises `ValueError` for anything else."""
    match = _ADDRESS.match(address) if isinstance(address, str) else None
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"TF_CONFIG address {address!r} is not host:port (a port from 1 to 65535)")
    return match.group(1).strip("[]"), int(match.group(2))


def parse_tf_config(raw):
    """Check a `TF_CONFIG` string whole; returns a `TaskConfig`. Raises `ValueError` (one line) otherwise."""
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {example}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or not config["cluster"]:
        raise ValueError(f"TF_CONFIG needs a non-empty 'cluster' object of job -> addresses; expected e.g. {example}")
    cluster, task = config["cluster"], config.get("task")
    for job, addresses in cluster.items():
        if job not in SUPPORTED_JOBS:
            raise ValueError(f"TF_CONFIG cluster has a {job!r} job: only {' and '.join(SUPPORTED_JOBS)} tasks are "
                             "supported (MultiWorkerMirroredStrategy; no parameter servers or evaluators)")
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f"TF_CONFIG cluster job {job!r} must be a non-empty list of host:port addresses")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG cluster has {len(cluster['chief'])} chief addresses; a cluster has at most one")
    seen = {}
    for job, index, address in [(j, i, a) for j in cluster for i, a in enumerate(cluster[j])]:
        key = split_address(address)[0].lower(), split_address(address)[1]
        if key in seen:
            raise ValueError(f"TF_CONFIG gives {address} to both {seen[key]} and {job} {index}; every task needs "
                             "its own host:port")
        seen[key] = f"{job} {index}"
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG needs a 'task' object with 'type' and 'index'; expected e.g. {example}")
    job, index = task["type"], task["index"]
    if job not in cluster:
        raise ValueError(f"TF_CONFIG task type {job!r} is not a job of the cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"TF_CONFIG task index {index!r} is not an integer")
    if not 0 <= index < len(cluster[job]):
        raise ValueError(f"TF_CONFIG task index {index} is out of range: the cluster's {job!r} job has "
                         f"{len(cluster[job])} address(es), indices 0 to {len(cluster[job]) - 1}")
    return TaskConfig({j: list(cluster[j]) for j in SUPPORTED_JOBS if j in cluster}, job, index)


def task_config(environ=None):
    """The checked `TF_CONFIG` of `environ` (default: the process'), or None without one."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    return parse_tf_config(raw) if raw else None


def stray_tf_config_notice(strategy, environ=None):
    """The one-line notice for a `TF_CONFIG` that `--strategy=strategy` ignores, or None."""
    if strategy == "multi_worker" or not (os.environ if environ is None else environ).get("TF_CONFIG"):
        return None
    return (f"{PROG}: TF_CONFIG is set but --strategy={strategy}: ignored, this process trains alone and writes its "
            "run (pass --strategy=multi_worker to join the cluster it names)")


# --- ports ------------------------------------------------------------------------------------


def bind_like_grpc(port):
    """A TCP socket bound to `port` on every interface with `SO_REUSEADDR`, as gRPC binds its server.

    Without `SO_REUSEADDR` the connections a killed worker left in TIME_WAIT would make the port look
    taken for a minute, though TensorFlow's server could bind it. Raises `OSError` if it is taken.
    """
    families = ([socket.AF_INET6] if socket.has_ipv6 else []) + [socket.AF_INET]
    for family in families:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack, as gRPC's [::]
            sock.bind(("::" if family == socket.AF_INET6 else "", port))
            return sock
        except OSError as e:
            sock.close()
            if family == families[-1] or e.errno not in (97, 99):  # EAFNOSUPPORT, EADDRNOTAVAIL: no IPv6 here
                raise
    raise OSError(f"cannot bind port {port}")  # unreachable


def check_port(task):
    """Raise `ValueError` if `task`'s port is taken on this machine (nothing is kept bound)."""
    try:
        bind_like_grpc(task.port).close()
    except OSError as e:
        raise ValueError(f"TF_CONFIG gives this worker {task.address}, but port {task.port} is in use on this machine "
                         f"({e.strerror}); pick a free port for every worker (and the same TF_CONFIG cluster list on "
                         "all of them)") from None


# --- rendezvous -------------------------------------------------------------------------------


def rendezvous(task, timeout, poll=0.2, linger=5.0):
    """Wait until every worker of `task.cluster` has greeted this one and been greeted by it.

    Each worker listens on its own port (bound as gRPC will bind it) and connects to every other one;
    a greeting and its answer carry the cluster's hash, the sender's rank and whether the sender is
    ready (it has reached every other worker and heard from each). A thread answers greetings at once,
    so two workers greeting each other never wait on each other. A worker leaves when it is ready, has
    seen every other ready and has told each that it is ready; then it frees its port for TensorFlow.
    A ready worker that cannot complete that exchange (the other already left) leaves after `linger` s.

    Raises:
        ClusterError: some worker did not answer within `timeout` seconds (named, one line).
        ValueError: a worker holds a different cluster list, or the port is taken.
    """
    peers = [r for r in range(len(task.tasks)) if r != task.rank]
    if not peers:
        return 0.0
    try:
        listener = bind_like_grpc(task.port)
    except OSError as e:
        raise ValueError(f"port {task.port} of {task.address} is in use on this machine ({e.strerror})") from None
    start = time.monotonic()
    meeting = _Meeting(peers)
    set_phase("waiting for the other workers")
    print(f"{PROG}: {task.name()} waiting up to {timeout:g} s for {len(peers)} other worker(s): "
          f"{', '.join(task.name(r) for r in peers)}", flush=True)
    with listener:
        listener.listen(len(task.tasks) * 2)
        listener.settimeout(poll)
        done = threading.Event()
        answering = threading.Thread(target=_answer_greetings, args=(listener, task, meeting, done), daemon=True)
        answering.start()
        try:
            ready_since = None
            while True:
                for rank in meeting.to_greet():
                    ready = meeting.ready()
                    answer = _greet(task, rank, ready)
                    if answer is not None:
                        meeting.reached_peer(rank, told_ready=ready, peer_ready=answer)
                if meeting.error:
                    raise meeting.error
                if meeting.ready():
                    ready_since = ready_since or time.monotonic()
                    if meeting.complete() or time.monotonic() - ready_since > linger:
                        break
                elif time.monotonic() - start > timeout:
                    missing = meeting.missing()
                    raise ClusterError(
                        f"the cluster did not assemble within --cluster_timeout={timeout:g} s: no answer from "
                        f"{', '.join(task.name(r) for r in missing)}; start every worker with the same TF_CONFIG "
                        "cluster list (or raise --cluster_timeout)")
                time.sleep(poll)
        finally:
            done.set()
            answering.join()
    return time.monotonic() - start


class _Meeting:
    """What one worker knows of the others during `rendezvous` (shared with its answering thread)."""

    def __init__(self, peers):
        self.peers = list(peers)
        self.reached, self.heard, self.seen_ready, self.told_ready = set(), set(), set(), set()
        self.error = None
        self._lock = threading.Lock()

    def ready(self):
        with self._lock:
            return self.reached.issuperset(self.peers) and self.heard.issuperset(self.peers)

    def complete(self):
        with self._lock:
            return self.seen_ready.issuperset(self.peers) and self.told_ready.issuperset(self.peers)

    def to_greet(self):
        ready = self.ready()
        with self._lock:
            return [r for r in self.peers if r not in self.reached
                    or (ready and (r not in self.seen_ready or r not in self.told_ready))]

    def missing(self):
        with self._lock:
            return ([r for r in self.peers if r not in self.reached and r not in self.heard]
                    or [r for r in self.peers if not (r in self.reached and r in self.heard)])

    def reached_peer(self, rank, told_ready, peer_ready):
        with self._lock:
            self.reached.add(rank)
            if told_ready:
                self.told_ready.add(rank)
            if peer_ready:
                self.seen_ready.add(rank)

    def heard_peer(self, rank, peer_ready):
        with self._lock:
            self.heard.add(rank)
            if peer_ready:
                self.seen_ready.add(rank)

    def told(self, rank):
        with self._lock:
            self.told_ready.add(rank)


def _message(task, ready):
    return f"{_HELLO} {task.digest()} {task.rank} {int(bool(ready))}\n".encode()


def _read_greeting(sock, task):
    """`(rank, ready)` of the sender of a greeting on `sock` (None if it is not one); raises ValueError
    for another cluster list."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 128:
        chunk = sock.recv(128)
        if not chunk:
            break
        data += chunk
    parts = data.decode("ascii", "replace").split()
    if len(parts) != 4 or parts[0] != _HELLO or not parts[2].isdigit() or parts[3] not in ("0", "1"):
        return None
    if parts[1] != task.digest():
        raise ValueError(f"a worker greeting {task.name()} holds a different TF_CONFIG cluster list; give every "
                         "worker the same cluster list (only task.index differs)")
    return int(parts[2]), parts[3] == "1"


def _answer_greetings(listener, task, meeting, done):
    """Answer every greeting on `listener` (a thread, until `done`); a foreign cluster list is kept in
    `meeting.error` for the main loop to raise."""
    while not done.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:  # the poll timeout included
            continue
        with conn:
            conn.settimeout(2.0)
            try:
                greeting = _read_greeting(conn, task)
                if greeting is not None:
                    rank, peer_ready = greeting
                    meeting.heard_peer(rank, peer_ready)
                    ready = meeting.ready()
                    conn.sendall(_message(task, ready))
                    if ready:
                        meeting.told(rank)
            except ValueError as e:
                meeting.error = e
            except OSError:
                pass


def _greet(task, rank, ready):
    """Greet worker `rank`: whether it answers that it is ready, or None without a valid answer."""
    host, port = split_address(task.tasks[rank][2])
    try:
        with socket.create_connection((host, port), timeout=1.0) as conn:
            conn.settimeout(2.0)
            conn.sendall(_message(task, ready))
            answer = _read_greeting(conn, task)
    except OSError:
        return None
    if answer is None or answer[0] != rank:
        return None
    return answer[1]


# --- stopping ---------------------------------------------------------------------------------

_STATE = {"phase": "starting", "who": "", "note": None, "installed": False}


def set_phase(phase):
    """What the worker is doing, for the line a signal prints."""
    _STATE["phase"] = phase


def set_stop_note(note):
    """`note()` -> what is kept (e.g. the last checkpoint), for the line a signal prints."""
    _STATE["note"] = note


def install_stop_handlers(task):
    """SIGINT/SIGTERM end this worker within seconds, at any phase, with one line; False if not possible.

    The Python handlers do nothing but exist: Python's C-level handler then writes the signal number
    to a wake-up socket, which a watchdog thread reads even while the main thread waits in a C++
    collective. Only the main thread may install handlers (elsewhere, e.g. under a launcher that runs
    the training in a thread, the launcher's handling stays).
    """
    if _STATE["installed"]:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _noop)
    signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    _STATE.update(installed=True, who=task.name(), sockets=(receiver, sender))
    threading.Thread(target=_watch, args=(receiver,), name="myol_keras-stop", daemon=True).start()
    return True


def _noop(signum, frame):  # the watchdog thread does the work (it also runs while C++ blocks)
    pass


def _watch(receiver):
    while True:
        data = receiver.recv(64)
        for number in data:
            if number in (signal.SIGINT, signal.SIGTERM):
                stop(signal.Signals(number).name, 128 + number)


def stop(reason, status):
    """Print the one stop line, flush and end the process now (from any thread)."""
    kept = "the chief keeps the run and its last complete checkpoint"
    with contextlib.suppress(Exception):  # the line must come out whatever
        kept = _STATE["note"]() if _STATE["note"] else kept
    print(f"{PROG}: stopped by {reason} ({_STATE['who']}, while {_STATE['phase']}); {kept}. "
          "Rerun the same command on every worker to resume.", file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(status)


# A separate watchdog *process* for TensorFlow's runtime start: no thread of ours runs while the main
# thread holds the GIL in `MultiWorkerMirroredStrategy()`. It reads its stdin: a byte or EOF (this
# process ended) means started; the deadline first means stuck, and it prints the line and ends us.
_WATCHDOG = """
import os, select, signal, sys
ready, _, _ = select.select([sys.stdin], [], [], float(sys.argv[1]))
if not ready:
    sys.stderr.write(sys.argv[3] + "\\n")
    sys.stderr.flush()
    os.kill(int(sys.argv[2]), signal.SIGTERM)
"""


@contextlib.contextmanager
def runtime_start(deadline=DEFAULT_CLUSTER_TIMEOUT):
    """TensorFlow's runtime start, bounded by `deadline` seconds.

    It holds the GIL, so SIGINT/SIGTERM take their default action meanwhile, and a watchdog process
    ends this one with one line if the start has not finished by the deadline (a worker that vanished
    between the greeting and TensorFlow's own handshake would otherwise leave it waiting for ever).
    """
    import subprocess

    set_phase("starting TensorFlow's collective runtime")
    main = threading.current_thread() is threading.main_thread()
    saved = [(n, signal.getsignal(n)) for n in (signal.SIGINT, signal.SIGTERM)] if main else []
    line = (f"{PROG}: error: TensorFlow's collective runtime did not start within {deadline:g} s "
            f"({_STATE['who']}): a worker stopped after the cluster met; rerun the same command on every worker")
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(deadline), str(os.getpid()), line],
                                stdin=subprocess.PIPE)
    for number, _ in saved:
        signal.signal(number, signal.SIG_DFL)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            watchdog.stdin.write(b"started")
            watchdog.stdin.close()
        watchdog.wait()
        for number, handler in saved:
            signal.signal(number, handler)
        set_phase("agreeing on the settings")

#!/usr/bin/python3
"""Integration test of ringqd's observability: /metrics, /healthz, /readyz,
the Prometheus rules and the Grafana dashboard, against a real Prometheus.

Goal: what operators rely on holds end to end. The exposition passes
`promtool check metrics` under load and its histograms are cumulative and end
in +Inf (promtool does not check that); a real Prometheus scraping the server
sees counters move by exactly the jobs pushed, acked and failed, and a finite
p99 push latency; every PromQL expression of deploy/prometheus/rules.yml and
deploy/grafana/ringq.json evaluates without error (the main dashboard panels
return data), so a renamed metric fails here; /readyz turns 503 when shutdown
starts while /healthz stays 200.

Method: start ringqd on 127.0.0.1 with --grpc-port=0 --http-port=0 and a
temporary --data-dir; drive it with the Python gRPC client (stubs generated
from proto/ into a temporary directory); start Debian's Prometheus
(/usr/bin/prometheus) on 127.0.0.1 with a temporary config scraping the
server every second, the rules file loaded, and a temporary storage dir; ask
its HTTP API. Every wait has a deadline; both processes are stopped at the
end even on failure, and die with this process (PR_SET_PDEATHSIG).

Run with Debian's interpreter (it sees python3-grpcio):
    /usr/bin/python3 tests/observability/test_observability.py --ringqd build/obs/service/ringqd
The last line is `observability: N passed, M failed`; exit status 1 on failure.
"""

import argparse
import ctypes
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 20
RPC_TIMEOUT_S = 5
HTTP_TIMEOUT_S = 5
PROM_READY_TIMEOUT_S = 30
SCRAPE_WAIT_S = 15  # how long to wait for Prometheus to scrape after an event
STOP_TIMEOUT_S = 10
LOAD_SECONDS_MAX = 4  # the load phase pushes for at most this long
LOAD_JOBS_MAX = 3000  # and at most this many jobs

grpc = None
pb = None
pb_grpc = None


class TestFailure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise TestFailure(message)


def check_eq(got, want, what):
    if got != want:
        raise TestFailure(f"{what}: expected {want!r}, got {got!r}")


def _die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, method="GET", timeout=HTTP_TIMEOUT_S):
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


# --- processes ----------------------------------------------------------------------------------


class Process:
    """A child process with its output in a log file; stopped by stop() or with us."""

    def __init__(self, argv, log_path):
        self.argv = argv
        self.log_path = log_path
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def log(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=30):
        return "\n".join("  | " + l for l in self.log().splitlines()[-lines:])

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        """Signal, wait STOP_TIMEOUT_S, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


class Ringqd(Process):
    def __init__(self, binary, tmp):
        self.data_dir = os.path.join(tmp, "data")
        super().__init__([binary, "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--rqp-port", "0",
                          "--data-dir", self.data_dir, "--shards", "2",
                          "--shutdown-grace-ms", "4000"],
                         os.path.join(tmp, "ringqd.log"))
        self.grpc_port = self.http_port = None

    def start(self):
        super().start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log()
            g = re.search(r"gRPC listening on [^:]+:(\d+)", text)
            h = re.search(r"HTTP listening on [^:]+:(\d+)", text)
            if g and h and "ringqd: ready" in text:
                self.grpc_port, self.http_port = int(g.group(1)), int(h.group(1))
                return
            if not self.running():
                raise TestFailure(f"ringqd exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.02)
        raise TestFailure(f"ringqd not ready within {STARTUP_TIMEOUT_S}s:\n{self.log_tail()}")

    def url(self, path):
        return f"http://127.0.0.1:{self.http_port}{path}"


class Prometheus(Process):
    def __init__(self, binary, tmp, target, rules):
        self.port = free_port()
        self.config = os.path.join(tmp, "prometheus.yml")
        # JSON is YAML: no YAML library needed.
        Path(self.config).write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [{"job_name": "ringq",
                                "static_configs": [{"targets": [target]}]}],
        }))
        super().__init__([binary, f"--config.file={self.config}",
                          f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                          f"--web.listen-address=127.0.0.1:{self.port}",
                          "--storage.tsdb.retention.time=1h",
                          "--log.level=warn"],
                         os.path.join(tmp, "prometheus.log"))

    def start(self):
        super().start()
        deadline = time.monotonic() + PROM_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running():
                raise TestFailure(f"prometheus exited:\n{self.log_tail()}")
            try:
                if http_get(self.api("/-/ready"), timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TestFailure(f"prometheus not ready within {PROM_READY_TIMEOUT_S}s")

    def api(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def query(self, expr, at=None):
        """Instant query: the result list. Raises TestFailure on an error status."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        status, _, body = http_get(self.api("/api/v1/query?" + urllib.parse.urlencode(params)))
        try:
            doc = json.loads(body)
        except json.JSONDecodeError:
            raise TestFailure(f"query {expr!r}: HTTP {status}: {body[:300]}")
        if doc.get("status") != "success":
            raise TestFailure(f"query {expr!r} failed: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]["result"]

    def value(self, expr, at=None):
        """The single value of a one-series instant query (float), or None when empty."""
        result = self.query(expr, at)
        if not result:
            return None
        check(len(result) == 1, f"{expr}: expected one series, got {len(result)}: {result}")
        return float(result[0]["value"][1])

    def wait_scraped_after(self, t):
        """Waits until Prometheus holds a sample of the server taken after wall time t."""
        deadline = time.monotonic() + SCRAPE_WAIT_S
        while time.monotonic() < deadline:
            ts = self.value("timestamp(ringq_metrics_scrapes_total)")
            if ts is not None and ts > t:
                return
            time.sleep(0.2)
        raise TestFailure(f"no scrape after {t} within {SCRAPE_WAIT_S}s:\n{self.log_tail()}")


# --- exposition parsing -------------------------------------------------------------------------

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """{family: {"type", "help", "samples": [(name, labels dict, value)]}}; checks the shape."""
    families, current = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            check(name not in families, f"line {n}: family {name} written twice")
            current = families[name] = {"help": line.split(" ", 3)[3:], "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            check(current is families.get(name), f"line {n}: TYPE {name} not after its HELP")
            current["type"] = typ
        elif line and not line.startswith("#"):
            m = SAMPLE_RE.match(line)
            check(m, f"line {n}: not a sample: {line!r}")
            name, labels = m.group(1), dict(LABEL_RE.findall(m.group(3) or ""))
            check(current is not None, f"line {n}: sample before any family")
            fam = [k for k, v in families.items() if v is current][0]
            check(name == fam or name in (fam + "_bucket", fam + "_sum", fam + "_count"),
                  f"line {n}: {name} inside family {fam}")
            current["samples"].append((name, labels, float(m.group(4))))
    for name, fam in families.items():
        check(fam["type"] in ("counter", "gauge", "histogram"), f"{name}: type {fam['type']}")
        if fam["type"] == "counter":
            check(name.endswith("_total"), f"counter {name} does not end in _total")
    return families


def check_histograms(families):
    """Buckets cumulative, ascending le, ending in +Inf, _count == +Inf bucket. Returns count."""
    checked = 0
    for name, fam in families.items():
        if fam["type"] != "histogram":
            continue
        series = {}
        for sname, labels, value in fam["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            s = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if sname.endswith("_bucket"):
                check("le" in labels, f"{name}: bucket without le")
                s["buckets"].append((float(labels["le"]), value, labels["le"]))
            elif sname.endswith("_sum"):
                s["sum"] = value
            else:
                s["count"] = value
        check(series, f"histogram {name} has no series")
        for key, s in series.items():
            b = s["buckets"]
            check(b and b[-1][2] == "+Inf", f"{name}{key}: buckets do not end in le=\"+Inf\"")
            for (le0, v0, _), (le1, v1, _) in zip(b, b[1:]):
                check(le0 < le1, f"{name}{key}: le {le0} then {le1}: not ascending")
                check(v0 <= v1, f"{name}{key}: bucket le={le1} ({v1}) < le={le0} ({v0}): "
                                f"not cumulative")
            check(s["count"] == b[-1][1], f"{name}{key}: _count {s['count']} != +Inf {b[-1][1]}")
            check(s["sum"] is not None and s["sum"] >= 0, f"{name}{key}: bad _sum {s['sum']}")
            checked += 1
    return checked


def promtool_check_metrics(promtool, text):
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0 and not out,
          f"promtool check metrics: exit {r.returncode}:\n{out[:3000]}")


# --- client helpers -----------------------------------------------------------------------------


def import_grpc(proto_dir, stubs_dir):
    global grpc, pb, pb_grpc
    gen = REPO / "client" / "python" / "ringq_gen.sh"
    r = subprocess.run(["sh", str(gen), stubs_dir, proto_dir], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        sys.exit(f"{gen} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    sys.path.insert(0, stubs_dir)
    import grpc as g
    from ringq.v1 import queue_pb2, queue_pb2_grpc
    grpc, pb, pb_grpc = g, queue_pb2, queue_pb2_grpc


def push(stub, queue_name, n, payload=b"x"):
    for _ in range(n):
        stub.Push(pb.PushRequest(job=pb.JobSpec(queue=queue_name, payload=payload)),
                  timeout=RPC_TIMEOUT_S)


def fetch(stub, queue_name, n):
    got = []
    while len(got) < n:
        r = stub.Fetch(pb.FetchRequest(queue=queue_name, max=min(100, n - len(got)), wait_ms=1000),
                       timeout=RPC_TIMEOUT_S)
        check(r.deliveries, f"fetch from {queue_name}: nothing after {len(got)} of {n}")
        got.extend(r.deliveries)
    return got


class Outbox:
    """The request side of a stream: gRPC pulls from this iterator in its own thread."""

    def __init__(self):
        self._q = queue.Queue()

    def send(self, item):
        self._q.put(item)

    def close(self):
        self._q.put(None)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            yield item


# --- the tests ----------------------------------------------------------------------------------


class Context:
    def __init__(self, args, tmp, server, stub):
        self.args, self.tmp, self.server, self.stub = args, tmp, server, stub
        self.prom = None


def test_endpoints(ctx):
    s = ctx.server
    check_eq(http_get(s.url("/healthz"))[0], 200, "/healthz")
    status, _, body = http_get(s.url("/readyz"))
    check_eq((status, body), (200, "ready\n"), "/readyz once ready")
    status, headers, body = http_get(s.url("/metrics"))
    check_eq(status, 200, "/metrics")
    check_eq(headers.get("Content-Type"), "text/plain; version=0.0.4; charset=utf-8",
             "/metrics Content-Type")
    check("ringq_ready 1\n" in body, "/metrics lacks ringq_ready 1")
    check_eq(http_get(s.url("/metrics/x"))[0], 404, "/metrics/x")
    check_eq(http_get(s.url("/metrics"), method="POST")[0], 405, "POST /metrics")


def test_scrape_under_load(ctx):
    """Pushes and workers run while /metrics is scraped; each scrape must check clean."""
    stop = threading.Event()
    pushed = [0]
    errors = []

    def producer():
        try:
            deadline = time.monotonic() + LOAD_SECONDS_MAX
            batch = pb.PushBatchRequest(jobs=[pb.JobSpec(queue=f"load-{i % 5}", payload=b"p")
                                              for i in range(50)])
            while not stop.is_set() and time.monotonic() < deadline and pushed[0] < LOAD_JOBS_MAX:
                ctx.stub.PushBatch(batch, timeout=RPC_TIMEOUT_S)
                push(ctx.stub, "load-unary", 5)
                pushed[0] += 55
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"producer: {e}")

    def worker():
        try:
            while not stop.is_set():
                for q in ("load-0", "load-1", "load-unary"):
                    r = ctx.stub.Fetch(pb.FetchRequest(queue=q, max=100, wait_ms=0),
                                       timeout=RPC_TIMEOUT_S)
                    for d in r.deliveries:
                        ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token),
                                     timeout=RPC_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker: {e}")

    threads = [threading.Thread(target=producer, daemon=True),
               threading.Thread(target=worker, daemon=True)]
    for t in threads:
        t.start()
    histograms = 0
    try:
        for _ in range(3):
            time.sleep(0.5)
            status, _, text = http_get(ctx.server.url("/metrics"))
            check_eq(status, 200, "/metrics under load")
            promtool_check_metrics(ctx.args.promtool, text)
            families = parse_exposition(text)
            histograms = check_histograms(families)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=RPC_TIMEOUT_S * 2)
    check(not errors, "; ".join(errors))
    check(pushed[0] > 0, "the load pushed nothing")
    # The last scrape after the load: the families the issue lists are all there.
    families = parse_exposition(http_get(ctx.server.url("/metrics"))[2])
    for name in ["ringq_jobs_pushed_total", "ringq_jobs_delivered_total",
                 "ringq_jobs_completed_total", "ringq_jobs_failed_total",
                 "ringq_jobs_retried_total", "ringq_jobs_dead_lettered_total",
                 "ringq_jobs_expired_total", "ringq_jobs_cancelled_total",
                 "ringq_grpc_server_handled_total", "ringq_bytes_received_total",
                 "ringq_bytes_sent_total", "ringq_push_latency_seconds",
                 "ringq_end_to_end_latency_seconds", "ringq_processing_seconds",
                 "ringq_wal_sync_seconds", "ringq_wal_records_per_sync",
                 "ringq_fetch_wait_seconds", "ringq_jobs", "ringq_queue_oldest_waiting_age_seconds",
                 "ringq_leases_active", "ringq_queue_subscribers", "ringq_subscribe_credits",
                 "ringq_connections", "ringq_wal_bytes", "ringq_rocksdb_live_data_bytes",
                 "ringq_build_info", "ringq_io_backend_info", "ringq_durability_info",
                 "ringq_ready"]:
        check(name in families, f"/metrics lacks {name}")
    pushed_total = sum(v for _, l, v in families["ringq_jobs_pushed_total"]["samples"])
    check(pushed_total >= pushed[0], f"pushed_total {pushed_total} < {pushed[0]} pushed")
    print(f"  load: {pushed[0]} jobs pushed; {histograms} histogram series checked", flush=True)


def start_prometheus(ctx):
    if ctx.prom is None:
        ctx.prom = Prometheus(ctx.args.prometheus, ctx.tmp,
                              f"127.0.0.1:{ctx.server.http_port}", ctx.args.rules)
        ctx.prom.start()
    return ctx.prom


def test_prometheus_sees_exact_counts(ctx):
    prom = start_prometheus(ctx)
    q = "obs-exact"
    n_push, n_ack, n_fail = 137, 100, 5
    # The queue exists (with zero counters) in Prometheus before anything is pushed.
    ctx.stub.Fetch(pb.FetchRequest(queue=q, max=1, wait_ms=0), timeout=RPC_TIMEOUT_S)
    created = time.time()
    prom.wait_scraped_after(created)
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while prom.value(f'ringq_jobs_pushed_total{{queue="{q}"}}') is None:
        check(time.monotonic() < deadline, f"queue {q} never appeared in Prometheus")
        time.sleep(0.2)
    counters = {
        "pushed": f'ringq_jobs_pushed_total{{queue="{q}"}}',
        "delivered": f'ringq_jobs_delivered_total{{queue="{q}"}}',
        "completed": f'ringq_jobs_completed_total{{queue="{q}"}}',
        "failed": f'ringq_jobs_failed_total{{queue="{q}"}}',
        "dead_lettered": f'ringq_jobs_dead_lettered_total{{queue="{q}"}}',
        "rpc_push_ok": 'ringq_grpc_server_handled_total{method="Push",code="OK"}',
        "rpc_ack_ok": 'ringq_grpc_server_handled_total{method="Ack",code="OK"}',
        "rpc_fail_ok": 'ringq_grpc_server_handled_total{method="Fail",code="OK"}',
        "wal_records": "ringq_wal_records_per_sync_sum",
    }
    before_t = time.time()
    before = {k: prom.value(e, before_t) for k, e in counters.items()}
    check(None not in before.values(), f"missing series before: {before}")

    push(ctx.stub, q, n_push)
    got = fetch(ctx.stub, q, n_ack + n_fail)
    for d in got[:n_ack]:
        ctx.stub.Ack(pb.AckRequest(id=d.job.id, lease_token=d.lease_token), timeout=RPC_TIMEOUT_S)
    for d in got[n_ack:]:
        ctx.stub.Fail(pb.FailRequest(id=d.job.id, lease_token=d.lease_token, error="boom",
                                     no_retry=True), timeout=RPC_TIMEOUT_S)
    done = time.time()
    prom.wait_scraped_after(done)
    after_t = time.time()
    after = {k: prom.value(e, after_t) for k, e in counters.items()}
    moved = {k: after[k] - before[k] for k in counters}
    # Every push, lease, ack and fail is a WAL record; the WAL's own records
    # (none here besides those) only add.
    wal_records = moved.pop("wal_records")
    check(wal_records >= n_push + 2 * (n_ack + n_fail),
          f"WAL records moved by {wal_records}, fewer than the {n_push + 2 * (n_ack + n_fail)} "
          f"pushes, leases, acks and fails")
    want = {"pushed": n_push, "delivered": n_ack + n_fail, "completed": n_ack,
            "failed": n_fail, "dead_lettered": n_fail, "rpc_push_ok": n_push,
            "rpc_ack_ok": n_ack, "rpc_fail_ok": n_fail}
    check_eq(moved, want, "counters moved (Prometheus, after - before)")
    check_eq(prom.value(f'ringq_jobs{{queue="{q}",state="waiting"}}', after_t),
             float(n_push - n_ack - n_fail), "waiting gauge")
    check_eq(prom.value(f'ringq_jobs{{queue="{q}",state="dead"}}', after_t), float(n_fail),
             "dead gauge")
    for quantile in (0.5, 0.99):
        v = prom.value(f"histogram_quantile({quantile}, sum by (le) "
                       f"(rate(ringq_push_latency_seconds_bucket[1m])))")
        check(v is not None and math.isfinite(v) and v > 0,
              f"push latency p{quantile * 100:g} is {v}, not a finite positive number")
        print(f"  push latency p{quantile * 100:g}: {v * 1e3:.3f} ms", flush=True)


def substitute_grafana(expr):
    """Grafana variables as an "All" selection and a 1m rate window would give."""
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
            .replace("$instance", ".*").replace("$queue", ".*"))


def dashboard_queries(path):
    """(panel title, expr) of every panel target, rows' nested panels included."""
    doc = json.loads(Path(path).read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(doc["panels"])
    return doc, out


# Panels whose queries must return data on a server that pushed and acked jobs.
MAIN_PANELS = {
    "Ready", "Durability", "I/O backend", "Version", "Queues",
    "Jobs per second by event", "Pushed per second by queue",
    "Push latency (receive to durable reply)", "End-to-end latency (due to first delivery)",
    "Processing time (delivery to ack)", "Jobs by state", "Waiting jobs by queue",
    "Oldest waiting job age by queue", "Dead letters by queue",
    "gRPC calls per second by method", "Connections", "CPU", "Memory",
    "WAL syncs per second", "WAL sync latency", "Records per sync", "On disk",
}


def test_dashboard_queries_evaluate(ctx):
    prom = start_prometheus(ctx)
    doc, queries = dashboard_queries(ctx.args.dashboard)
    check(len(queries) >= 20, f"only {len(queries)} queries in the dashboard")
    titles = {t for t, _ in queries}
    missing = MAIN_PANELS - titles
    check(not missing, f"main panels missing from the dashboard: {sorted(missing)}")
    # The variable queries' metrics exist.
    for var in doc["templating"]["list"]:
        definition = var.get("definition", "")
        m = re.match(r"label_values\((.*),\s*(\w+)\)$", definition)
        if m:
            result = prom.query(substitute_grafana(m.group(1)))
            check(any(m.group(2) in r["metric"] for r in result),
                  f"variable {var['name']}: {definition} finds no {m.group(2)}")
    empty = []
    for title, expr in queries:
        result = prom.query(substitute_grafana(expr))  # raises on an evaluation error
        if title in MAIN_PANELS and not result:
            empty.append(f"{title}: {expr}")
    check(not empty, "main dashboard queries returned no data:\n  " + "\n  ".join(empty))
    print(f"  {len(queries)} dashboard queries evaluated", flush=True)


def rules_exprs(path):
    """(name, expr) of every rule. The file is YAML; the rules are found by their keys."""
    out, name = [], None
    lines = Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- (record|alert): (\S+)", line)
        if m:
            name = m.group(2)
        m = re.match(r"(\s*)expr: (.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", ">"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((name, " ".join(block)))
                continue
            out.append((name, rest))
        i += 1
    return out


def test_rules_check_and_evaluate(ctx):
    r = subprocess.run([ctx.args.promtool, "check", "rules", ctx.args.rules],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"promtool check rules: exit {r.returncode}:\n{r.stdout}{r.stderr}")
    prom = start_prometheus(ctx)
    exprs = rules_exprs(ctx.args.rules)
    check(len(exprs) >= 10, f"only {len(exprs)} rules parsed from {ctx.args.rules}")
    for name, expr in exprs:
        prom.query(expr)  # raises on an evaluation error
    # Prometheus loaded them and evaluates them without error.
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        _, _, body = http_get(prom.api("/api/v1/rules"))
        groups = json.loads(body)["data"]["groups"]
        rules = [rule for g in groups for rule in g["rules"]]
        bad = [f"{x['name']}: {x.get('health')} {x.get('lastError', '')}" for x in rules
               if x.get("health") != "ok"]
        if len(rules) == len(exprs) and not bad:
            break
        check(time.monotonic() < deadline,
              f"rules not all healthy in Prometheus ({len(rules)} of {len(exprs)} loaded): {bad}")
        time.sleep(0.3)
    # Recorded series appear (from an evaluation after enough scrapes).
    for name in ("ringq:jobs_pushed:rate1m", "ringq:jobs_live", "ringq:push_latency_seconds:p99_5m"):
        deadline = time.monotonic() + SCRAPE_WAIT_S
        while not prom.query(name):
            check(time.monotonic() < deadline, f"recording rule {name} produced no series")
            time.sleep(0.3)
    print(f"  {len(exprs)} rule expressions evaluated; all healthy in Prometheus", flush=True)


def test_readyz_turns_503_on_shutdown(ctx):
    """Runs last: stops the server. An open PushStream holds the drain in its grace period."""
    s = ctx.server
    outbox = Outbox()
    call = ctx.stub.PushStream(iter(outbox), timeout=30)
    outbox.send(pb.PushRequest(job=pb.JobSpec(queue="obs-shutdown", payload=b"x")))
    first = next(call)
    check(first.result.id != 0, f"PushStream answer: {first}")
    s.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    status = None
    while time.monotonic() < deadline:
        status = http_get(s.url("/readyz"), timeout=1)[0]
        if status == 503:
            break
        time.sleep(0.02)
    try:
        check_eq(status, 503, "/readyz after SIGTERM")
        check_eq(http_get(s.url("/healthz"), timeout=1)[0], 200, "/healthz while draining")
        check("ringq_ready 0\n" in http_get(s.url("/metrics"))[2], "ringq_ready is not 0")
    finally:
        outbox.close()
    code = s.stop()
    check_eq(code, 0, "ringqd exit code after SIGTERM")


TESTS = [
    test_endpoints,
    test_scrape_under_load,
    test_prometheus_sees_exact_counts,
    test_rules_check_and_evaluate,
    test_dashboard_queries_evaluate,
    test_readyz_turns_503_on_shutdown,
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ringqd", required=True)
    p.add_argument("--proto-dir", default=str(REPO / "proto"))
    p.add_argument("--promtool", default="/usr/bin/promtool")
    p.add_argument("--prometheus", default="/usr/bin/prometheus")
    p.add_argument("--rules", default=str(REPO / "deploy" / "prometheus" / "rules.yml"))
    p.add_argument("--dashboard", default=str(REPO / "deploy" / "grafana" / "ringq.json"))
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args()


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("killed by SIGTERM"))
    for tool in (args.ringqd, args.promtool, args.prometheus):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} not found: apt-get install --no-install-recommends prometheus "
                     f"(promtool, prometheus), or build ringqd")
    tmp = tempfile.mkdtemp(prefix="ringq-obs-")
    import_grpc(args.proto_dir, os.path.join(tmp, "stubs"))
    server = Ringqd(os.path.abspath(args.ringqd), tmp)
    ctx = None
    passed, failed = 0, []
    started = time.monotonic()
    try:
        server.start()
        print(f"ringqd: gRPC 127.0.0.1:{server.grpc_port}, HTTP 127.0.0.1:{server.http_port}",
              flush=True)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=STARTUP_TIMEOUT_S)
            ctx = Context(args, tmp, server, pb_grpc.QueueStub(channel))
            for t in TESTS:
                t0 = time.monotonic()
                try:
                    t(ctx)
                    passed += 1
                    print(f"PASS {t.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
                except Exception as e:  # noqa: BLE001
                    failed.append(t.__name__)
                    print(f"FAIL {t.__name__}: {e}", flush=True)
                    if not isinstance(e, TestFailure):
                        traceback.print_exc()
    except Exception as e:  # noqa: BLE001
        failed.append("setup")
        print(f"FAIL setup: {e}", flush=True)
    finally:
        if ctx is not None and ctx.prom is not None:
            ctx.prom.stop()
        code = server.stop()
        if code not in (0, None) and "test_readyz_turns_503_on_shutdown" not in failed:
            failed.append("clean shutdown")
            print(f"ringqd exited with {code}", flush=True)
    if failed:
        print("ringqd log tail:\n" + server.log_tail(), flush=True)
        if ctx is not None and ctx.prom is not None:
            print("prometheus log tail:\n" + ctx.prom.log_tail(), flush=True)
        print(f"kept {tmp} for inspection")
    elif not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"took {time.monotonic() - started:.1f}s")
    print(f"observability: {passed} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

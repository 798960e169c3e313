#!/usr/bin/env python3
"""Side by side: a 3-member etcd cluster against cairn's ingest bench (issue 17, point 4).

At each client count (default 64 and 256 concurrent connections) it measures:
  * etcd, 3 members on loopback, fsync on (etcd's default): one put per request through
    the HTTP/JSON gateway (POST /v3/kv/put, a new key each time, a ~400-byte value like a
    FHIR Observation), driven by `wrk` (one process per member, run together). Puts/s,
    p50/p99, and etcd CPU µs per put (the members' utime+stime from /proc over the run).
  * cairn: `cargo bench -p cairn-tests --bench ingest -- 1 TOTAL INTERVAL CLIENTS` (one
    reading per request, 4 validators, plain HTTP unless --tls), from its `RESULT` line.
One Markdown table with the cairn/etcd ratios goes to stdout, progress to stderr. Run it
three times and record the ratios in BENCHMARKS.md:
    python3 tests/benches/compare_etcd.py        # or --skip-cairn --duration 10, see --help
Installs Debian's `etcd-server` and `wrk` with apt-get if missing (as root, or via sudo).
etcd listens on 127.0.0.1:23790-23792 (clients) and 23800-23802 (peers), keeps its data in
a temporary directory, and is stopped and its data deleted at the end, also on errors,
Ctrl-C and SIGTERM. Python 3.11, standard library only.
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENT_PORTS = (23790, 23791, 23792)
PEER_PORTS = (23800, 23801, 23802)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[compare_etcd] {msg}", file=sys.stderr, flush=True)


def ensure_tools():
    missing = [pkg for tool, pkg in (("etcd", "etcd-server"), ("wrk", "wrk")) if not shutil.which(tool)]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 or not shutil.which("sudo") else ["sudo"]
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update"], check=True, stdout=sys.stderr, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "--no-install-recommends"] + missing,
                   check=True, stdout=sys.stderr, env=env)


def http(url, body=None, timeout=2.0):
    """GET (or POST a JSON body); returns (status, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


class EtcdCluster:
    """Three etcd members on loopback, each with its own data dir under one temp dir."""

    def __init__(self):
        self.dir, self.procs = Path(tempfile.mkdtemp(prefix="cairn-etcd-bench-")), []

    def start(self):
        for port in CLIENT_PORTS + PEER_PORTS:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise RuntimeError(f"port {port} already in use (a stale etcd?)")
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(PEER_PORTS))
        for i, (cport, pport) in enumerate(zip(CLIENT_PORTS, PEER_PORTS)):
            curl, purl = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
            cmd = ["etcd", f"--name=m{i}", f"--data-dir={self.dir / f'm{i}'}",
                   f"--listen-client-urls={curl}", f"--advertise-client-urls={curl}",
                   f"--listen-peer-urls={purl}", f"--initial-advertise-peer-urls={purl}",
                   f"--initial-cluster={cluster}", "--initial-cluster-state=new",
                   "--initial-cluster-token=cairn-bench"]
            logf = open(self.dir / f"m{i}.log", "wb")
            # Own session: a terminal's Ctrl-C reaches only us, and stop() ends the members.
            self.procs.append(subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))
            logf.close()
        deadline = time.monotonic() + 60
        while not all(self._healthy(p) for p in CLIENT_PORTS):
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                tail = (self.dir / f"m{(dead or [0])[0]}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd cluster not healthy (exited: {dead}); log tail:\n{tail}")
            time.sleep(0.2)
        log(f"etcd cluster healthy, pids {[p.pid for p in self.procs]}, data in {self.dir}")

    @staticmethod
    def _healthy(port):
        try:
            return http(f"http://127.0.0.1:{port}/health", timeout=1)[1].get("health") == "true"
        except (OSError, ValueError, AttributeError):
            return False

    def cpu_seconds(self):
        """utime + stime (fields 14 and 15 of /proc/PID/stat) of the members, in seconds."""
        stats = [Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split() for p in self.procs]
        return sum(int(f[11]) + int(f[12]) for f in stats) / CLK_TCK  # f[0] is field 3 (state)

    def stop(self):
        t0 = time.monotonic()
        for p in self.procs:
            p.terminate()  # a no-op on a member that has exited
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        log(f"etcd cluster stopped in {time.monotonic() - t0:.1f} s, data deleted")


def gateway_path():
    """The JSON gateway's put path: /v3 from etcd 3.4 on, /v3beta or /v3alpha before."""
    for prefix in ("/v3", "/v3beta", "/v3alpha"):
        path = f"{prefix}/kv/put"
        status, _ = http(f"http://127.0.0.1:{CLIENT_PORTS[0]}{path}",
                         {"key": base64.b64encode(b"probe").decode(), "value": ""})
        if status == 200:
            return path
    raise RuntimeError("no etcd JSON gateway path answered 200 to a put")


def observation(value_bytes):
    """A FHIR Observation like the ingest bench's, padded to value_bytes."""
    obs = ('{"resourceType":"Observation","status":"final","code":{"coding":[{"system":'
           '"http://loinc.org","code":"55423-8"}]},"subject":{"reference":"Patient/bench-42"},'
           '"effectivePeriod":{"start":"2026-11-22T10:00:00Z","end":"2026-11-22T10:05:00Z"},'
           '"valueQuantity":{"value":1234,"unit":"steps"},"component":[{"code":{"text":'
           '"Walking cadence"},"valueQuantity":{"value":101.5,"unit":"steps/min"}}]}')
    return obs.ljust(value_bytes).encode()


# One wrk Lua state per thread: setup() numbers the threads, init() gets the process tag
# from wrk's trailing args, request() builds a new key (tag/thread/counter) every time.
LUA = r"""
local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local function ch(k) local v = math.floor(n / 64 ^ k) % 64 + 1 return B:sub(v, v) end
    out[#out + 1] = ch(3) .. ch(2) .. (b and ch(1) or "=") .. (c and ch(0) or "=")
  end
  return table.concat(out)
end
local threads = 0
function setup(thread) threads = threads + 1 thread:set("tid", threads) end
local prefix, count = "", 0
function init(args)
  prefix = "bench/" .. args[1] .. "/" .. tid .. "/"
  wrk.method, wrk.path, wrk.headers["Content-Type"] = "POST", "@PATH@", "application/json"
end
function request()
  count = count + 1
  return wrk.format(nil, nil, nil, '{"key":"' .. b64(prefix .. count) .. '","value":"@VALUE@"}')
end
"""


def parse_wrk(out):
    """Requests, requests/s and p50/p99 (ms) of one wrk run; fails on any error response."""
    def grab(pattern):
        if not (m := re.search(pattern, out, re.M)):
            raise RuntimeError(f"wrk output lacks /{pattern}/:\n{out}")
        return m.group(1)
    def ms(text):  # wrk prints e.g. 812.00us, 9.08ms, 1.20s
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    if (bad := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) and int(bad.group(1)):
        raise RuntimeError(f"etcd answered {bad.group(1)} non-2xx responses:\n{out}")
    if errors := re.search(r"Socket errors: (.*)", out):
        raise RuntimeError(f"wrk socket errors ({errors.group(1)}):\n{out}")
    return {"requests": int(grab(r"^\s*(\d+) requests in")), "rps": float(grab(r"^Requests/sec:\s*([\d.]+)")),
            "p50": ms(grab(r"^\s*50%\s+(\S+)")), "p99": ms(grab(r"^\s*99%\s+(\S+)"))}


def run_etcd_phase(cluster, lua_path, clients, args):
    """Three wrk processes at once, one per member, connections split evenly."""
    conns = [clients // 3 + (i < clients % 3) for i in range(3)]
    log(f"etcd: {clients} connections ({'/'.join(map(str, conns))}) for {args.duration} s")
    cpu0 = cluster.cpu_seconds()
    procs = [subprocess.Popen(["wrk", f"-t{min(args.threads, c)}", f"-c{c}", f"-d{args.duration}s",
                               "--latency", "-s", str(lua_path), f"http://127.0.0.1:{port}",
                               "--", f"c{clients}m{i}"], stdout=subprocess.PIPE, text=True)
             for i, (c, port) in enumerate(zip(conns, CLIENT_PORTS))]
    try:
        outs = [p.communicate()[0] for p in procs]
    finally:  # on Ctrl-C / SIGTERM, leave no wrk running (a no-op on those that ended)
        for p in procs:
            p.kill()
    cpu = cluster.cpu_seconds() - cpu0
    for p, out in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"wrk exited {p.returncode}:\n{out}")
    runs = [parse_wrk(o) for o in outs]
    total = sum(r["requests"] for r in runs)
    res = {"rps": sum(r["rps"] for r in runs),
           # p50: request-weighted mean of the three medians (an estimate);
           # p99: the worst of the three (conservative: no process saw a worse one).
           "p50": sum(r["p50"] * r["requests"] for r in runs) / total,
           "p99": max(r["p99"] for r in runs),
           "cpu_us": cpu * 1e6 / total, "requests": total}
    log(f"etcd {clients}: {res['rps']:.0f} puts/s, p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, "
        f"{res['cpu_us']:.0f} CPU us/put ({total} puts)")
    return res


def run_etcd(args):
    cluster = EtcdCluster()
    try:
        cluster.start()
        path = gateway_path()
        log(f"etcd JSON gateway put path: {path}")
        value = base64.b64encode(observation(args.value_bytes)).decode()
        lua = cluster.dir / "put.lua"
        lua.write_text(LUA.replace("@PATH@", path).replace("@VALUE@", value))
        return {c: run_etcd_phase(cluster, lua, c, args) for c in args.clients}
    finally:
        cluster.stop()


def run_cairn(clients, total, args):
    cmd = ["cargo", "bench", "-p", "cairn-tests", "--bench", "ingest", "--",
           "1", str(total), str(args.block_interval_ms), str(clients)]
    env = dict(os.environ)
    if not args.tls:
        env["CAIRN_BENCH_PLAINTEXT"] = "1"
    log(f"cairn: {' '.join(cmd)} ({'HTTPS' if args.tls else 'plain HTTP'})")
    # Own process group (cargo, the bench and its nodes), so an interruption stops them all.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    result = None
    try:
        for line in proc.stdout:  # stream through to stderr, keep the RESULT line
            sys.stderr.write(line)
            if line.startswith("RESULT "):
                result = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        raise
    if proc.returncode or result is None:
        raise RuntimeError(f"cairn ingest bench failed (exit {proc.returncode}, RESULT line: {result is not None})")
    return result


def table(clients, etcd, cairn):
    def num(d, key):  # a RESULT value as a number (unit suffix dropped), None if absent
        m = re.match(r"[\d.]+", d.get(key, ""))
        return float(m.group()) if m else None
    def fmt(x, digits=0, suffix=""):
        return "n/a" if x is None else f"{x:,.{digits}f}{suffix}"
    def ratio(a, b):
        return a / b if a is not None and b else None
    print("| clients | etcd puts/s | etcd p50/p99 ms | etcd CPU µs/put | cairn readings/s "
          "| cairn ack p50/p99 ms | cairn receipt p99 ms | cairn node CPU µs/request "
          "| throughput cairn/etcd | CPU per request cairn/etcd |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in clients:
        e, k = etcd.get(c, {}), cairn.get(c, {})
        rps, cpu = num(k, "readings_per_s"), num(k, "node_cpu_us_per_request")
        print(f"| {c} | {fmt(e.get('rps'))} | {fmt(e.get('p50'), 1)} / {fmt(e.get('p99'), 1)} "
              f"| {fmt(e.get('cpu_us'))} | {fmt(rps)} | {fmt(num(k, 'ack_p50_ms'))} / "
              f"{fmt(num(k, 'ack_p99_ms'))} | {fmt(num(k, 'receipt_p99_ms'))} | {fmt(cpu)} "
              f"| {fmt(ratio(rps, e.get('rps')), 2, '×')} | {fmt(ratio(cpu, e.get('cpu_us')), 2, '×')} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=20, help="seconds per etcd wrk phase")
    ap.add_argument("--clients", default="64,256", help="comma-separated connection counts")
    ap.add_argument("--cairn-total", default="64=40000,256=60000",
                    help="readings per cairn run, as CLIENTS=TOTAL,... (others: 40000)")
    ap.add_argument("--block-interval-ms", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads per wrk process")
    ap.add_argument("--value-bytes", type=int, default=400)
    ap.add_argument("--tls", action="store_true", help="cairn over HTTPS (etcd stays plain HTTP)")
    ap.add_argument("--skip-cairn", action="store_true")
    ap.add_argument("--skip-etcd", action="store_true")
    args = ap.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    totals = {int(k): int(v) for k, v in (kv.split("=") for kv in args.cairn_total.split(","))}
    # Ctrl-C (even if inherited as ignored) and SIGTERM unwind, so finally blocks stop etcd.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    etcd, cairn = {}, {}
    if not args.skip_etcd:
        ensure_tools()
        etcd = run_etcd(args)
    if not args.skip_cairn:
        for c in args.clients:
            cairn[c] = run_cairn(c, totals.get(c, 40000), args)
    table(args.clients, etcd, cairn)
    for c in args.clients:  # the cairn bench's whole RESULT line, for the record
        if c in cairn:
            print(f"cairn {c} clients: " + " ".join(f"{k}={v}" for k, v in cairn[c].items()))
    version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split()[2] \
        if shutil.which("etcd") else "n/a"  # "etcd Version: 3.4.23 ..."
    print(f"\nMachine: nproc {len(os.sched_getaffinity(0))}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
          f"etcd {version} (3 members, fsync on), wrk -t{args.threads} for {args.duration} s, "
          f"cairn block interval {args.block_interval_ms} ms, {'HTTPS' if args.tls else 'plain HTTP'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted")
    except RuntimeError as e:
        sys.exit(f"compare_etcd: {e}")

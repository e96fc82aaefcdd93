"""The ``cpp_standalone`` back end of SpikingPTNCN: a compiled Brian2 network that
serves half-windows.

Brian2's standalone mode turns a script into a C++ program and runs it once.  A
P-TNCN step needs numpy between its two half-windows (the read-out, the
perturbation ``d`` and the LRA updates), so the program built here does not run
once: with ``device.insert_code("main", ...)`` the network's ``run(T/2)`` is wrapped
in a loop that, per half-window,

1. reads a command from stdin: ``int32`` 0 (stop), 1 (new currents) or 2 (new
   currents and new synaptic weights), then ``n_lif`` float64 currents ``I`` and,
   for 2, ``n_syn`` float64 weights ``w``;
2. zeroes every membrane, spike counter and refractory clock (each half starts
   from rest, as in the runtime targets);
3. runs the Brian2-generated network for T/2;
4. writes the spike counts of the LIF group (``n_lif``) and the pos / neg event
   counts of the error units (``n_err`` each) to stdout as float64, then, with
   ``record_spikes``, every spike of batch row 0 of each population (count, unit
   indices, times, and for error units the sign), and empties those monitors.

So the binary is compiled once per network shape (batch, sizes, window, dt, LIF and
error-unit constants) and cached (``$PTNCN_BRIAN_CACHE`` or
``~/.cache/ptncn/brian2_standalone``); one process then serves a whole training run
with no code generation, no process start and no file I/O per step.  The network
itself is the same Brian2 description as for the runtime targets
(:mod:`ptncn.spiking.network`), and the spike counts agree with theirs
(``tests/test_spiking_standalone.py``).

The build runs in a separate Python process (``python -m ptncn.spiking.standalone
SPEC.json DIR``), so ``set_device("cpp_standalone")`` never touches the caller's
Brian2 device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from .backends import Backend
from .network import network_spec

BUILD_VERSION = 3


class StandaloneError(RuntimeError):
    """The standalone binary could not be built, or stopped answering."""


_LOG = logging.getLogger(__name__)

def cache_root() -> str:
    root = os.environ.get("PTNCN_BRIAN_CACHE")
    if not root:
        root = os.path.join(os.path.expanduser("~"), ".cache", "ptncn", "brian2_standalone")
    return root


def compiler_missing() -> str | None:
    """Why no binary can be built here (no make / C++ compiler), or None."""
    for tool in ("make", os.environ.get("CXX", "g++")):
        if shutil.which(tool) is None:
            return f"target 'cpp_standalone' needs {tool!r} on PATH (a C++ build toolchain)"
    return None


def _key(spec: dict) -> str:
    from ._brian import import_brian2
    b2 = import_brian2()
    # the binary is compiled with -march=native: key it to this machine as well
    blob = json.dumps({"spec": spec, "build": BUILD_VERSION, "brian2": b2.__version__,
                       "python": sys.version_info[:2], "machine": platform.machine(),
                       "host": platform.node()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def ensure_built(spec: dict, log=None) -> str:
    """The project directory of a compiled server for ``spec`` (built if not cached)."""
    why = compiler_missing()
    if why:
        raise StandaloneError(why)
    root = cache_root()
    final = os.path.join(root, _key(spec))
    if os.path.exists(os.path.join(final, "server.json")):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="build-", dir=root)
    try:
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f)
        (log or _LOG.info)(f"spiking_ptncn: compiling the Brian2 cpp_standalone network "
                           f"(batch {spec.get('batch')}, sizes {spec.get('sizes')}); once per "
                           f"network shape, typically 20-60 s; cached in {root}")
        try:
            out = subprocess.run([sys.executable, "-m", "ptncn.spiking.standalone",
                                  os.path.join(tmp, "spec.json"), tmp],
                                 capture_output=True, text=True)
        except OSError as exc:
            raise StandaloneError(f"building the cpp_standalone server failed: {exc}") from exc
        if out.returncode != 0 or not os.path.exists(os.path.join(tmp, "server.json")):
            tail = (out.stdout + out.stderr)[-3000:]
            raise StandaloneError(f"building the cpp_standalone server failed:\n{tail}")
        try:
            os.rename(tmp, final)
        except OSError:          # another process finished the same build first
            if not os.path.exists(os.path.join(final, "server.json")):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


_LOOP_START = """
// --- ptncn: serve half-windows (see ptncn/spiking/standalone.py) ---
{{
const int _p_nlif = {n_lif}, _p_nerr = {n_err}, _p_nsyn = {n_syn};
while (true) {{
    int32_t _p_cmd = 0;
    if (fread(&_p_cmd, sizeof(int32_t), 1, stdin) != 1 || _p_cmd == 0) break;
    if ((int)fread({I}, sizeof(double), _p_nlif, stdin) != _p_nlif) break;
    if (_p_cmd == 2) {{
        if ((int)fread(&{w}[0], sizeof(double), _p_nsyn, stdin) != _p_nsyn) break;
    }}
    const double _p_t0 = {clock_t}[0];     // the network's time carries on across halves
    for (int _p_i = 0; _p_i < _p_nlif; _p_i++) {{
        {v}[_p_i] = 0.0; {cnt}[_p_i] = 0.0;
        {lastspike}[_p_i] = -10000.0; {not_refractory}[_p_i] = true;
    }}
    for (int _p_i = 0; _p_i < _p_nerr; _p_i++) {{
        {ev}[_p_i] = 0.0; {npos}[_p_i] = 0.0; {nneg}[_p_i] = 0.0;
    }}
"""

_LOOP_END = """
    fwrite({cnt}, sizeof(double), _p_nlif, stdout);
    fwrite({npos}, sizeof(double), _p_nerr, stdout);
    fwrite({nneg}, sizeof(double), _p_nerr, stdout);
{monitors}    fflush(stdout);
}}
}}
// --- ptncn: end ---
"""

# with monitors, after the counts: float64 start time of the half (s), then per spike
# monitor: int32 n, n int32 indices, n float64 times (s from
# the start of the half), [n float64 v for error units: the sign], then empty it
_MONITOR_OUT = """    {{
        int32_t _p_n = {N}[0];
        fwrite(&_p_n, sizeof(int32_t), 1, stdout);
        if (_p_n > 0) {{
            fwrite(&{i}[0], sizeof(int32_t), _p_n, stdout);
            fwrite(&{t}[0], sizeof(double), _p_n, stdout);
{v_out}        }}
        {i}.clear(); {t}.clear();{v_clear} {N}[0] = 0;
    }}
"""


def _build_project(spec: dict, directory: str) -> None:
    """Generate and compile the server (runs in its own process: sets the device)."""
    from ._brian import import_brian2
    from .network import build_objects, network_layout, spike_monitors
    b2 = import_brian2()
    b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
    lay = network_layout(spec["batch"], spec["sizes"])
    lifg, errg, syn = build_objects(b2, lay, spec)
    objs = [g for g in (lifg, errg, syn) if g is not None]
    net = b2.Network(*objs)
    dev = b2.get_device()
    dev.apply_run_args()                 # outside the loop: argv is read once
    name = dev.get_array_name
    lv = lifg.variables
    ev = errg.variables
    w = name(syn.variables["w"], access_data=False) if syn is not None else "_p_nowt"
    fields = dict(n_lif=lay.n_lif, n_err=lay.n_err, n_syn=lay.n_syn, I=name(lv["I"]),
                  v=name(lv["v"]), cnt=name(lv["cnt"]), lastspike=name(lv["lastspike"]),
                  not_refractory=name(lv["not_refractory"]), ev=name(ev["v"]),
                  npos=name(ev["npos"]), nneg=name(ev["nneg"]), w=w)
    mons = spike_monitors(b2, lay, lifg, errg) if spec.get("record_spikes") else []
    for _, mon in mons:
        net.add(mon)
    fields["monitors"] = _monitor_code(mons, name)
    fields["clock_t"] = name(lifg.clock.variables["t"])
    if syn is None:
        dev.insert_code("main", "std::vector<double> _p_nowt(1);")
    dev.insert_code("main", _LOOP_START.format(**fields))
    net.run(spec["window_ms"] / 2 * b2.ms)
    dev.insert_code("main", _LOOP_END.format(**fields))
    dev.build(directory=directory, compile=True, run=False)
    with open(os.path.join(directory, "server.json"), "w") as f:
        json.dump({"spec": spec, "n_lif": lay.n_lif, "n_err": lay.n_err, "n_syn": lay.n_syn,
                   "monitors": [[n, "v" in m.variables] for n, m in mons],
                   "brian2": b2.__version__}, f)


def _monitor_code(mons, name) -> str:
    """The C++ that writes (and empties) the spike monitors after each half-window."""
    out = []
    for _, mon in mons:
        mv = mon.variables
        vec = {k: name(mv[k], access_data=False) for k in ("i", "t") + (("v",) if "v" in mv
                                                                          else ())}
        v = vec.get("v")
        out.append(_MONITOR_OUT.format(
            N=name(mv["N"]), i=vec["i"], t=vec["t"],
            v_out=(f"            fwrite(&{v}[0], sizeof(double), _p_n, stdout);\n"
                   if v else ""),
            v_clear=f" {v}.clear();" if v else ""))
    if out:
        out.insert(0, "    fwrite(&_p_t0, sizeof(double), 1, stdout);\n")
    return "".join(out)


class StandaloneServer:
    """One running server process for a network shape; :meth:`run_half` per half-window."""

    def __init__(self, spec: dict, log=None):
        self.spec = spec
        self.directory = ensure_built(spec, log)
        with open(os.path.join(self.directory, "server.json")) as f:
            info = json.load(f)
        self.n_lif, self.n_err, self.n_syn = info["n_lif"], info["n_err"], info["n_syn"]
        self.monitors = [(n, bool(v)) for n, v in info.get("monitors", [])]
        #: spike events of the last half-window: (population, unit index, time in ms from
        #: the start of the half, sign or None), one entry per population with events
        self.events: list = []
        self._results = tempfile.mkdtemp(prefix="ptncn-b2-results-")
        self._stderr = open(os.path.join(self._results, "stderr.txt"), "w+b")
        try:
            self._proc = subprocess.Popen(
                [os.path.join(self.directory, "main"), "--results_dir",
                 os.path.join(self._results, "")],
                cwd=self.directory, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, bufsize=0)
        except OSError as exc:
            self._proc = None
            self.close()
            raise StandaloneError(f"cannot start the cpp_standalone server in "
                                  f"{self.directory} ({exc}); delete that directory to "
                                  "rebuild it") from exc
        self._nbytes = 8 * (self.n_lif + 2 * self.n_err)

    def _fail(self, what: str):
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")[-2000:]
        code = self._proc.poll()
        self.close()
        raise StandaloneError(f"the cpp_standalone server {what} (exit code {code}); "
                              f"stderr:\n{err}")

    def run_half(self, I: np.ndarray, w: np.ndarray | None = None):
        """Run T/2 from rest with currents ``I`` (and weights ``w`` if given); return the
        LIF spike counts and the error units' pos and neg event counts."""
        if self._proc is None:
            raise StandaloneError("the cpp_standalone server is closed")
        I = np.ascontiguousarray(I, np.float64)
        if I.shape != (self.n_lif,):
            raise ValueError(f"I has shape {I.shape}, expected ({self.n_lif},)")
        parts = [np.int32(2 if w is not None else 1).tobytes(), I.tobytes()]
        if w is not None:
            w = np.ascontiguousarray(w, np.float64)
            if w.shape != (self.n_syn,):
                raise ValueError(f"w has shape {w.shape}, expected ({self.n_syn},)")
            parts.append(w.tobytes())
        try:
            self._proc.stdin.write(b"".join(parts))
        except (BrokenPipeError, OSError):
            self._fail("stopped before its input was sent")
        out = np.frombuffer(self._read(self._nbytes), np.float64).copy()
        self.events = []
        t0 = float(np.frombuffer(self._read(8), np.float64)[0]) if self.monitors else 0.0
        for pop, signed in self.monitors:
            n = int(np.frombuffer(self._read(4), np.int32)[0])
            if n:
                ii = np.frombuffer(self._read(4 * n), np.int32).copy()
                t = (np.frombuffer(self._read(8 * n), np.float64) - t0) * 1000.0
                sign = (np.sign(np.frombuffer(self._read(8 * n), np.float64)).astype(np.int8)
                        if signed else None)
                self.events.append((pop, ii, t, sign))
        return (out[:self.n_lif], out[self.n_lif:self.n_lif + self.n_err],
                out[self.n_lif + self.n_err:])

    def _read(self, nbytes: int) -> bytes:
        buf = bytearray(nbytes)
        view, got = memoryview(buf), 0
        while got < nbytes:
            n = self._proc.stdout.readinto(view[got:])
            if not n:
                self._fail("stopped before answering")
            got += n
        return bytes(buf)

    def close(self):
        p, self._proc = self._proc, None
        if p is not None:
            try:
                p.stdin.write(np.int32(0).tobytes())
                p.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()
        shutil.rmtree(self._results, ignore_errors=True)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class StandaloneBackend(Backend):
    """Half-windows on the compiled server (``server``: its :class:`StandaloneServer`,
    one per network shape).  Spike events are timed from the first window on: the
    server reports them from the start of each half."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.server: StandaloneServer | None = None
        self.halves = 0                 # half-windows of simulated time so far

    def _open(self) -> None:
        self.server = StandaloneServer(network_spec(self.batch, self.cfg))

    def _run(self, half, I, w):
        if self.server is None:          # the last one failed: start another
            self._open()
        try:
            counts = self.server.run_half(I, w)
        except StandaloneError:
            self.server = None
            raise
        t0 = self.halves * self.cfg.half_ms
        self.events += [(p, i, t + t0, sg) for p, i, t, sg in self.server.events]
        self.halves += 1
        return counts

    def abort(self) -> None:
        self.halves += self.halves % 2

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        super().close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m ptncn.spiking.standalone SPEC.json DIRECTORY", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    _build_project(spec, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

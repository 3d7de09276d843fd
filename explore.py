#!/usr/bin/env python3
"""explore.py: a local web page to watch a run and play with its generator.

    python explore.py out/dcgan-cifar10                  # a run folder, or a ckpt.pt
    python explore.py out/my-run --script my_gan.py      # networks from your hacked copy of a script

It serves one page at the address it prints (http://127.0.0.1:8000/ unless --host or --port say otherwise;
requests addressed to another host name get 403; --host 0.0.0.0 also answers a machine's IP address, or
tunnel: ssh -L 8000:127.0.0.1:8000 HOST, then http://127.0.0.1:8000/ where you are): the run (script, dataset, epoch, flags, latest FID, loss
curves, progress.png), followed while it trains; the EMA generator's samples for any seed, temperature and
(of a --conditional run) class; walks between two samples you click (slerp for normal noise, linear for
uniform); PNG downloads; for a 2-D mlp_gan.py run, a scatter over the mode centres.

Directions (GANSpace, Harkonen et al. 2020): the first 8 principal components of the output of G's first
layer (dcgan.py: its first transposed convolution; wgan_sn.py and mlp_gan.py: the first Linear), from 4,096
samples, computed when first asked for and again for each new checkpoint. Each slider adds its direction,
-3 to +3 standard deviations, to that output for every sample of the grid (sliders add up; "reset" or 0 gives
the plain grid, the same pixels; a conditional G keeps its classes). Each direction's "strip" link is a PNG
of one sample (the last one clicked) along it in 7 steps. A 2-D run has none.

Standard library and the scripts' own dependencies, no network. It imports the script that wrote the
checkpoint (build(), sample_noise(), to_output()): mlp_gan, dcgan or wgan_sn, else --script FILE; no script
imports it. A checkpoint's strings reach the page as text, never as markup.
Measured on 2 AVX2 EPYC cores, torch 2.14.1, 2026-12-01: a 64-image grid of dcgan.py's G in 88 ms over HTTP.
"""
import argparse, csv, importlib.util, io, ipaddress, json, math, os, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import torch
from PIL import Image
from torchvision.utils import make_grid

class UsageError(Exception):
    """Bad input at start-up: one line, exit status 2."""

class BadRequest(Exception):
    """A bad request: HTTP 400 with a one-line JSON error; the server goes on."""

SCRIPTS = ("mlp_gan", "dcgan", "wgan_sn")  # imported by the name a checkpoint gives; any other code: --script
DIRECTIONS, PCA_SAMPLES = 8, 4096  # principal directions of G's first layer, from this many samples

def load_script(name, path=None):  # the module that wrote a checkpoint: NAME.py beside this file, or --script
    if path is None and name not in SCRIPTS:  # a checkpoint must not choose which code runs
        raise UsageError(f"the checkpoint names the script {name!r}, not one of {', '.join(SCRIPTS)}: "
                         "give the file that builds its networks with --script FILE")
    path = Path(path or Path(__file__).with_name(f"{name}.py"))
    if not path.is_file():
        raise UsageError(f"no {path} to build the networks of a {name} checkpoint (use --script FILE)")
    spec = importlib.util.spec_from_file_location(f"explored_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the scripts' imports have no side effects
    return module

def slerp(a, b, t):  # along the great circle: the points between two normal vectors keep their typical norm
    omega = torch.acos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega < 1e-4:  # (nearly) the same direction
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)

def number(query, name, kind, lo, hi, default):  # a query parameter, checked: BadRequest if it is not one
    text = query.get(name, [str(default)])[-1]
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise BadRequest(f"{name}={text} is not in [{lo}, {hi}]")
    return value

class Run:
    """A run folder and its checkpoint's (EMA) generator, reloaded when ckpt.pt changes."""

    def __init__(self, path, script=None, device="cpu"):
        path = Path(path)
        self.folder, self.ckpt = (path.parent, path) if path.suffix == ".pt" else (path, path / "ckpt.pt")
        if not self.ckpt.is_file():
            raise UsageError(f"no checkpoint {self.ckpt} (give a run folder that holds ckpt.pt, or a .pt)")
        self.script, self.device_name, self.lock = script, device, threading.Lock()
        self.version, self.warning, self.fid, self.fid_stamp = 0, "", None, None
        try:
            self.load()
        except Exception as e:  # a corrupt file, a checkpoint of another kind or one that does not fit
            if type(e).__name__ == "UsageError":  # ours, or the script's (a bad --device): in its own words
                raise UsageError(str(e)) from None
            why = f"{type(e).__name__}: {e}"[:200]
            raise UsageError(f"{self.ckpt}: not a checkpoint of these scripts ({why})") from None

    def load(self):
        stamp = self.ckpt.stat().st_mtime_ns
        ck = torch.load(self.ckpt, map_location="cpu", weights_only=True)  # a file cannot run code
        if not (isinstance(ck, dict) and isinstance(ck.get("script"), str) and "args" in ck):
            raise UsageError(f"{self.ckpt} is not a checkpoint written by dcgan.py, wgan_sn.py or mlp_gan.py")
        module = load_script(ck["script"], self.script)
        args = argparse.Namespace(**{"conditional": False, "classes": ["."], **ck["args"]})  # (older ones)
        device = module.pick_device(self.device_name)
        G = module.build(args, ck["channels"], len(args.classes) if args.conditional else 0)[0]
        G.load_state_dict(ck["G_ema"] if ck.get("G_ema") is not None else ck["G"])
        self.module, self.args, self.meta, self.stamp = module, args, ck, stamp
        code, here = Path(module.__file__).resolve(), Path.cwd().resolve()  # the file whose networks run, said
        self.code = str(code.relative_to(here) if code.is_relative_to(here) else code)  # on the page: short
        self.G, self.device = G.to(device).eval().requires_grad_(False), device
        self.pca = None  # the directions of this G, made when first asked for
        self.version += 1

    def refresh(self):  # a rewritten ckpt.pt: its model; one that cannot be read (yet): the previous model
        with self.lock:
            try:
                if self.ckpt.stat().st_mtime_ns != self.stamp:
                    self.load()
                    self.warning = ""
            except Exception as e:
                self.warning = f"kept the model of step {self.meta['step']}: {type(e).__name__}: {e}"[:200]

    def info(self):
        self.refresh()
        m, a = self.meta, self.args
        return dict(script=m["script"], code=self.code, dataset=a.dataset, epoch=m["epoch"], epochs=a.epochs,
                    step=m["step"], fid=self.latest_fid(), points=m["channels"] is None, noise=a.noise,
                    image_size=getattr(a, "image_size", None), classes=a.classes if a.conditional else None,
                    flags=dict(sorted(vars(a).items())), version=self.version, warning=self.warning,
                    progress=(self.folder / "progress.png").is_file())

    def latest_fid(self):  # from metrics.csv, read again only when it changes (it grows by a row a step)
        try:
            path = self.folder / "metrics.csv"
            if path.stat().st_mtime_ns != self.fid_stamp:
                rows = list(csv.DictReader(path.read_text().splitlines()))
                self.fid = next((r["fid"] for r in reversed(rows) if r.get("fid")), None)
                self.fid_stamp = path.stat().st_mtime_ns
        except OSError:  # no metrics.csv (yet): no FID
            self.fid = None
        return self.fid

    def noise(self, n, seed, temperature):  # a seed's n latent vectors, the same on every device
        z = self.module.sample_noise(n, self.args, "cpu", torch.Generator().manual_seed(seed))
        return z * temperature

    def first_layer(self):  # the directions live in its output: G's first Linear or convolution
        if self.meta["channels"] is None:
            raise BadRequest("a 2-D run has no image directions")
        kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
        layer = next((m for m in self.G.modules() if isinstance(m, kinds)), None)
        if layer is None:
            raise BadRequest("this G has no Linear or convolution layer whose output could be edited")
        return layer

    @torch.no_grad()
    def directions(self):  # (K, D) orthonormal directions, their standard deviations: GANSpace's PCA
        with self.lock:
            if self.pca is not None:
                return self.pca
            outputs, start = [], time.perf_counter()
            hook = self.first_layer().register_forward_hook(lambda m, i, out: outputs.append(out.flatten(1)))
            try:  # (a conditional G makes the classes in turn)
                z = self.module.sample_noise(PCA_SAMPLES, self.args, "cpu", torch.Generator().manual_seed(0))
                for batch in z.split(512):
                    self.G(batch.to(self.device))
            finally:
                hook.remove()
            x = torch.cat(outputs).float().cpu()
            with torch.random.fork_rng(devices=[]):  # pca_lowrank's random start, the same each time
                torch.manual_seed(0)
                _, s, v = torch.pca_lowrank(x, q=min(DIRECTIONS, *x.shape), center=True)
            self.pca = (v.T.contiguous(), s / math.sqrt(len(x) - 1), time.perf_counter() - start)
            return self.pca

    def shift(self, offsets):  # (rows, K) offsets in standard deviations -> (rows, D) moves of its output
        components, std, _ = self.directions()
        return (offsets * std) @ components

    @torch.no_grad()
    def picture(self, z, y, nrow, title="", shift=None):  # PNG bytes: a grid of G's images of z, or a scatter
        png = io.BytesIO()
        with self.lock:  # shift: added to G's first layer's output (a row for all, or one an image)
            hook = None
            if shift is not None:
                move = shift.to(self.device)
                add = lambda module, inputs, output: output + move.view(-1, *output.shape[1:])
                hook = self.first_layer().register_forward_hook(add)
            try:
                out = self.module.to_output(self.G(z.to(self.device), y.to(self.device)), self.args).cpu()
            finally:
                if hook is not None:
                    hook.remove()
            if self.meta["channels"] is None:
                self.module.scatter(out, self.module.mixture(self.args.dataset)[0], png, title)
                return png.getvalue()
        grid = make_grid(out, nrow=nrow, padding=2)  # uint8, with the 2-px gaps of the scripts' grids
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(png, format="PNG")
        return png.getvalue()

    def layout(self, query, n):  # -> (labels, images a row): all of class ?label=K, or a row a class (-1)
        if "label" in query and not self.args.conditional:
            raise BadRequest("this checkpoint has no classes (it was not trained with --conditional)")
        k, classes = number(query, "label", int, -1, len(self.args.classes) - 1, -1), len(self.args.classes)
        if k >= 0 or not self.args.conditional:
            return torch.full((n,), max(k, 0)), math.ceil(math.sqrt(n))
        per_row = max(1, n // classes)  # rows of n // classes: every class shows (n below it: the first n)
        return torch.arange(n) // per_row % classes, per_row  # (the page's clicks use the same rule)

    def grid(self, query):  # ?edit=o1,...,oK: offsets along the directions (all 0: the plain grid)
        n, seed = number(query, "n", int, 8, 256, 64), number(query, "seed", int, 0, 2 ** 31 - 1, 0)
        z = self.noise(n, seed, number(query, "temperature", float, 0.05, 3, 1))
        y, per_row = self.layout(query, n)
        offsets = self.offsets(query)
        shift = self.shift(offsets[None]) if offsets.any() else None
        return self.picture(z, y, per_row, f"{n} samples, seed {seed}", shift)

    def offsets(self, query):  # the edit's offsets, in standard deviations: K numbers in [-3, 3]
        texts = query.get("edit", [""])[-1].split(",") if "edit" in query else []
        if texts and len(texts) != len(self.directions()[1]):
            raise BadRequest(f"edit needs {len(self.directions()[1])} numbers, not {len(texts)}")
        return torch.tensor([number({"edit": [t]}, "edit", float, -3, 3, 0) for t in texts] or [0.0])

    def strip(self, query):  # one sample along one direction, from -3 to +3 standard deviations in 7 steps
        n, seed = number(query, "n", int, 8, 256, 64), number(query, "seed", int, 0, 2 ** 31 - 1, 0)
        k = number(query, "direction", int, 0, len(self.directions()[1]) - 1, 0)
        i = number(query, "sample", int, 0, n - 1, 0)
        z = self.noise(n, seed, number(query, "temperature", float, 0.05, 3, 1))[i].repeat(7, 1)
        offsets = torch.zeros(7, len(self.directions()[1]))
        offsets[:, k] = torch.linspace(-3, 3, 7)
        return self.picture(z, self.layout(query, n)[0][i].repeat(7), 7, shift=self.shift(offsets))

    def directions_info(self):  # for the page: how many directions, their spread, how long the PCA took
        _, std, seconds = self.directions()
        return dict(std=[round(float(v), 4) for v in std], seconds=round(seconds, 2), version=self.version,
                    step=self.meta["step"])

    def walk(self, query):  # a conditional G walks in the class of the first sample
        if self.meta["channels"] is None:
            raise BadRequest("a 2-D run has points, not images, to walk between")
        n, seed = number(query, "n", int, 8, 256, 64), number(query, "seed", int, 0, 2 ** 31 - 1, 0)
        a, b = number(query, "a", int, 0, n - 1, 0), number(query, "b", int, 0, n - 1, 1)
        steps, y = number(query, "steps", int, 2, 32, 10), self.layout(query, n)[0]
        z = self.noise(n, seed, number(query, "temperature", float, 0.05, 3, 1))
        between = slerp if self.args.noise == "normal" else torch.lerp  # uniform noise: a straight line
        frames = torch.stack([between(z[a], z[b], t) for t in torch.linspace(0, 1, steps)])
        return self.picture(frames, y[a].repeat(steps), steps)

    def file(self, relative):  # only the run's images and metrics.csv, nothing outside its folder
        path = (self.folder / unquote(relative)).resolve()
        if not (path.is_relative_to(self.folder.resolve()) and path.is_file()
                and (path.suffix == ".png" or path.name == "metrics.csv")):
            raise BadRequest(f"{unquote(relative)!r} is not an image or metrics.csv of this run")
        return path.read_bytes(), "image/png" if path.suffix == ".png" else "text/csv; charset=utf-8"

def is_ip_address(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False

class Handler(BaseHTTPRequestHandler):
    run = None  # the Run this server shows (set by make_server)
    hosts = ()  # the Host headers it answers: its own addresses (a page elsewhere may rebind a name to them)
    port = None  # bound to every interface (0.0.0.0, ::): also a Host that is an IP address with this port

    def addressed_here(self):  # DNS rebinding needs a name that resolves to this machine, never a bare address
        host = self.headers.get("Host", "")
        if host in self.hosts:
            return True
        try:
            url = urlparse("//" + host)
            return self.port is not None and (url.port or 80) == self.port and is_ip_address(url.hostname)
        except ValueError:  # a port that is not a number
            return False

    def handle(self):  # a request the browser dropped (a slider moved on) is not an error: nothing to say
        try:
            super().handle()
        except ConnectionError:
            self.close_connection = True

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if not self.addressed_here():  # DNS rebinding: another site's name for this address
            error = f"Host {self.headers.get('Host')!r} is not this server's address ({self.hosts[0]})"
            return self.reply(403, json.dumps({"error": error}).encode(), "application/json")
        try:
            if url.path == "/":
                self.reply(200, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/favicon.ico":  # browsers ask for one: no content, rather than a 404 in the console
                self.reply(204, b"", "image/x-icon")
            elif url.path == "/api/info":
                self.reply(200, json.dumps(self.run.info()).encode(), "application/json")
            elif url.path == "/api/grid":
                self.reply(200, self.run.grid(query), "image/png")
            elif url.path == "/api/walk":
                self.reply(200, self.run.walk(query), "image/png")
            elif url.path == "/api/directions":
                self.run.refresh()
                self.reply(200, json.dumps(self.run.directions_info()).encode(), "application/json")
            elif url.path == "/api/strip":
                self.reply(200, self.run.strip(query), "image/png")
            elif url.path.startswith("/run/"):
                self.reply(200, *self.run.file(url.path[5:]))
            else:
                self.reply(404, json.dumps({"error": f"no {url.path} here"}).encode(), "application/json")
        except BadRequest as e:
            self.reply(400, json.dumps({"error": str(e)}).encode(), "application/json")
        except ConnectionError:  # the browser went away mid-answer: handle() ends the connection quietly
            raise
        except Exception as e:  # a bug or a broken model: said, and the server goes on
            error = f"{type(e).__name__}: {e}"[:200]
            self.reply(500, json.dumps({"error": error}).encode(), "application/json")

    def reply(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # samples and curves change while a run trains
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet: a request a second while the page follows a run
        pass

class IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6

def make_server(run, host="127.0.0.1", port=8000):  # port 0: any free port (server.server_address)
    server = (IPv6Server if ":" in host else ThreadingHTTPServer)((host, port), Handler)
    port = server.server_address[1]
    names = [host, "127.0.0.1", "localhost", "::1"]
    hosts = [f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in dict.fromkeys(names)]
    if port == 80:  # the browser leaves out the default port
        hosts += [h.rsplit(":", 1)[0] for h in hosts]
    every_interface = host in ("", "0.0.0.0", "::")
    attributes = {"run": run, "hosts": tuple(hosts), "port": port if every_interface else None}
    server.RequestHandlerClass = type("RunHandler", (Handler,), attributes)
    return server

PAGE = r"""<!doctype html><html><head><meta charset="utf-8"><title>explore</title><style>
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 4px} .muted{color:#666} .warn{color:#b00}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;margin:10px 0}
img.px{image-rendering:pixelated;cursor:crosshair;display:block;margin-top:8px}
label{margin-right:12px} input[type=number]{width:90px} td{padding:0 10px 0 0}
</style></head><body>
<h1 id="title">explore</h1><div id="meta" class="muted"></div><div id="warning" class="warn"></div>
<section><b>Samples</b> of the EMA generator
  <div><label>images <select id="n"><option>8</option><option>16</option><option>36</option>
  <option selected>64</option><option>100</option><option>144</option><option>256</option></select></label>
  <label>seed <input id="seed" type="number" value="0" min="0"></label>
  <button id="new">new samples</button>
  <label>temperature <input id="temp" type="range" min="0.1" max="2" step="0.05" value="1">
  <span id="tval">1.00</span></label> <label id="classbox" hidden>class <select id="label"></select></label>
  <a id="dlgrid" download>download PNG</a></div>
  <div id="hint" class="muted">Click two samples to walk between them.</div>
  <img id="grid" class="px" alt="samples"></section>
<section id="dirbox" hidden><b>Directions</b> of G's first layer (GANSpace: its principal components)
  <span id="dirinfo" class="muted"></span> <button id="reset">reset</button>
  <div class="muted">Each slider moves the grid along one direction, -3 to +3 standard deviations; a strip
  shows the last sample you clicked (else sample 0) along one direction, -3 to +3 in 7 steps.</div>
  <table id="sliders"></table></section>
<section id="walkbox" hidden><b>Walk</b> <span id="walkinfo" class="muted"></span>
  <a id="dlwalk" download>download PNG</a><img id="walk" class="px" alt="walk"></section>
<section><b>Training</b> <span id="fid"></span><div id="curves"></div><img id="progress" alt="progress">
  <details><summary>flags</summary><table id="flags"></table></details></section>
<script>
const $ = id => document.getElementById(id);
let info = null, picks = [], lastPick = 0;
function enlarge(img, width) {  // a whole-number zoom: pixels stay sharp
  img.style.width = img.naturalWidth * Math.max(1, Math.floor(width / img.naturalWidth)) + "px";
}
function query(extra) {
  const q = {n: $("n").value, seed: $("seed").value, temperature: $("temp").value, ...extra};
  if (info.classes) q.label = $("label").value;
  const offsets = [...document.querySelectorAll("#sliders input")].map(s => s.value);
  if (offsets.some(v => +v != 0) && !("direction" in q)) q.edit = offsets.join(",");
  return new URLSearchParams(q).toString() + "&v=" + info.version;
}
function showGrid() {
  picks = []; $("hint").textContent = info.points ? "" : "Click two samples to walk between them.";
  const url = "/api/grid?" + query({});
  $("grid").src = url; $("dlgrid").href = url; $("dlgrid").download = `samples-seed${$("seed").value}.png`;
  showStrips();
}
function showWalk() {
  const [a, b] = picks, url = "/api/walk?" + query({a, b, steps: 10});
  $("walkbox").hidden = false; $("walk").src = url; $("dlwalk").href = url;
  $("dlwalk").download = `walk-seed${$("seed").value}-${a}-${b}.png`;
  $("walkinfo").textContent = `sample ${a} to sample ${b} (${info.noise == "normal" ? "slerp" : "linear"})`;
}
$("grid").onload = () => enlarge($("grid"), 560); $("walk").onload = () => enlarge($("walk"), 840);
$("grid").onclick = e => {  // which cell: the grid has 2-px gaps, nrow images a row
  if (info.points) return;
  const img = $("grid"), n = +$("n").value, cell = info.image_size + 2;
  const rowEach = info.classes && $("label").value == "-1";  // as the server's layout(): a row a class
  const nrow = rowEach ? Math.max(1, Math.floor(n / info.classes.length)) : Math.ceil(Math.sqrt(n));
  const x = e.offsetX * img.naturalWidth / img.clientWidth;
  const y = e.offsetY * img.naturalHeight / img.clientHeight;
  const i = Math.floor(y / cell) * nrow + Math.min(nrow - 1, Math.floor(x / cell));
  if (i >= n) return;
  picks.push(i);
  $("hint").textContent = picks.length == 1 ? `sample ${i} picked: click another` : "";
  lastPick = i; showStrips();
  if (picks.length == 2) { showWalk(); picks = []; }
};
async function showDirections(first) {  // sliders and strip links, made again for a new checkpoint
  const reply = await fetch(`/api/directions?v=${info.version}`);
  $("dirbox").hidden = !reply.ok;
  if (!reply.ok) return;  // a 2-D run: no directions
  const d = await reply.json();
  $("dirinfo").textContent = (first ? "" : "new, for the checkpoint of step " + d.step + "; ") +
    `computed in ${d.seconds} s`;
  $("sliders").replaceChildren(...d.std.map((std, k) => {
    const row = document.createElement("tr"), slider = document.createElement("input");
    const link = document.createElement("a");
    Object.assign(slider, {type: "range", min: -3, max: 3, step: 0.25, value: 0});
    slider.onchange = showGrid;
    row.insertCell().textContent = `${k + 1} (std ${std.toFixed(2)})`;
    row.insertCell().append(slider);
    link.textContent = "strip";
    row.insertCell().append(link);
    return row;
  }));
  showStrips();
}
function showStrips() {  // each direction's strip link: the last sample clicked, along it
  document.querySelectorAll("#sliders a").forEach((a, k) => {
    a.href = "/api/strip?" + query({direction: k, sample: lastPick});
    a.download = `direction${k + 1}-seed${$("seed").value}-sample${lastPick}.png`;
  });
}
$("reset").onclick = () => {
  document.querySelectorAll("#sliders input").forEach(slider => { slider.value = 0; });
  showGrid();
};
for (const id of ["n", "seed", "temp", "label"]) $(id).onchange = showGrid;
$("new").onclick = () => { $("seed").value = Math.floor(Math.random() * 1e6); showGrid(); };
$("temp").oninput = () => { $("tval").textContent = (+$("temp").value).toFixed(2); };
function showRun() {
  $("title").textContent = `${info.script}.py on ${info.dataset}`;
  $("meta").textContent = `epoch ${info.epoch} of ${info.epochs}, step ${info.step}, ${info.noise} noise; ` +
    `networks of ${info.code}`;
  $("warning").textContent = info.warning;
  $("fid").textContent = info.fid ? `latest FID ${info.fid}` : "";
  $("progress").hidden = !info.progress;
  if (info.progress) $("progress").src = `/run/progress.png?v=${info.version}`;
  drawCurves();
  $("classbox").hidden = !info.classes;
  if (info.classes && !$("label").options.length)  // once: "a row each" (-1), then the classes
    ["a row each", ...info.classes.map((c, i) => `${i}: ${c}`)]
      .forEach((text, i) => $("label").add(new Option(text, i - 1)));
  $("flags").replaceChildren(...Object.entries(info.flags).map(([k, v]) => {  // text nodes: a file's strings
    const row = document.createElement("tr");                              // never become markup
    row.insertCell().textContent = `--${k.replaceAll("_", "-")}`;
    row.insertCell().textContent = typeof v == "string" ? v : JSON.stringify(v);
    return row;
  }));
}
async function drawCurves() {  // metrics.csv drawn as metrics.png is: running means of the step values
  const reply = await fetch(`/run/metrics.csv?v=${info.version}`);
  if (!reply.ok) return;
  const [head, ...lines] = (await reply.text()).trim().split(/\r?\n/).map(line => line.split(","));
  const rowsOf = name => lines.filter(r => isFinite(parseFloat(r[head.indexOf(name)])));  // its values' rows
  const names = head.slice(4).filter(c => c != "img_per_s" && rowsOf(c).length);
  const perStep = c => rowsOf(c)[0][0] == "step";  // else an epoch value: FID, 2-D mode metrics
  const panels = [names.filter(c => perStep(c) && c.includes("loss")),
                  names.filter(c => perStep(c) && !c.includes("loss")),
                  ...names.filter(c => !perStep(c)).map(c => [c])].filter(p => p.length);
  $("curves").innerHTML = panels.map(() => '<canvas width="380" height="220"></canvas>').join(" ");
  $("curves").querySelectorAll("canvas").forEach((canvas, i) => {
    const g = canvas.getContext("2d"), colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    const series = panels[i].map(c => {
      const rows = rowsOf(c), at = head.indexOf(c);
      const k = perStep(c) ? Math.max(1, Math.floor(rows.length / 50)) : 1;  // raw GAN losses are noisy
      const mean = j => rows.slice(j, j + k).reduce((sum, r) => sum + +r[at], 0) / k;
      return rows.slice(k - 1).map((r, j) => [+r[2], mean(j)]);
    });
    const xs = series.flat().map(p => p[0]), ys = series.flat().map(p => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const X = x => 40 + 330 * (x - x0) / (x1 - x0 || 1), Y = y => 200 - 185 * (y - y0) / (y1 - y0 || 1);
    g.font = "11px sans-serif";
    g.fillText(y1.toPrecision(3), 0, 18);
    g.fillText(y0.toPrecision(3), 0, 200);
    g.fillText(`step ${x0} to ${x1}`, 150, 216);
    g.strokeRect(40, 10, 330, 195);
    series.forEach((points, j) => {
      g.strokeStyle = g.fillStyle = colours[j % 4];
      g.beginPath();
      g.moveTo(X(points[0][0]), Y(points[0][1]));
      points.forEach(([x, y]) => g.lineTo(X(x), Y(y)));
      g.stroke();
      g.fillText(panels[i][j], 300, 25 + 14 * j);
    });
  });
}
async function poll() {  // every 3 s: a new checkpoint redraws the page's run, samples and walk
  try {
    const next = await (await fetch("/api/info")).json();
    if (!info || next.version != info.version) {
      const first = !info; info = next; showRun();
      $("sliders").replaceChildren(); showGrid(); showDirections(first);  // new directions, unedited
      if (!first && !$("walkbox").hidden) $("walk").src = $("walk").src.replace(/v=\d+/, "v=" + info.version);
    } else if (next.warning != info.warning) { info = next; showRun(); }
  } catch (e) { $("warning").textContent = "the server is not answering"; }
}
poll(); setInterval(poll, 3000);
</script></body></html>"""

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder (it holds ckpt.pt) or a checkpoint file")
    p.add_argument("--script", help="the script file that builds the networks (default: the checkpoint's)")
    p.add_argument("--host", default="127.0.0.1", help="the address to serve (IPv4 or IPv6). Requests must "
                   "name it, or 127.0.0.1, localhost or [::1], with the port, in their Host header; others get "
                   "403 (a page on another site cannot use this one). 0.0.0.0 or :: (every network this "
                   "machine is on) also answers any IP address with the port: open http://IP:PORT/ from "
                   "another machine (a name other than localhost gets 403)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="where the generator runs: cpu, cuda, cuda:N, mps or auto")
    args = p.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # 2-D scatters are drawn in server threads, with no window
    try:
        run = Run(args.run, args.script, args.device)
        server = make_server(run, args.host, args.port)
    except (UsageError, OSError) as e:  # OSError: the port is taken, say
        print("error:", *str(e).split(), file=sys.stderr)
        sys.exit(2)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} lets other machines reach this page and the run (from another "
              f"machine: http://<this machine's IP address>:{server.server_address[1]}/)", file=sys.stderr)
    print(f"serving {run.folder} at http://{server.RequestHandlerClass.hosts[0]}/ with the networks of "
          f"{run.code} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")

if __name__ == "__main__":
    main()

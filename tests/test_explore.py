"""explore.py over HTTP (a server on a free port, a tiny trained run) and in a real browser (Debian's chromium,
driven by Playwright; skipped where either is missing)."""
import http.client
import io
import json
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import explore
import mlp_gan
from conftest import ROOT, make_mnist

TINY = ["--dataset", "mnist", "--image-size", "16", "--g-width", "8", "--d-width", "8", "--batch-size", "16",
        "--log-every", "2", "--device", "cpu"]  # 64 images: 4 steps an epoch
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    make_mnist(root / "data")
    dcgan.main([*TINY, "--data-dir", str(root / "data"), "--epochs", "1", "--out-dir", str(root / "run")])
    return root


@pytest.fixture(scope="module")
def conditional(trained):  # a --conditional run of the same data
    run = trained / "conditional"
    dcgan.main([*TINY, "--data-dir", str(trained / "data"), "--epochs", "1", "--out-dir", str(run), "--conditional"])
    return run


@pytest.fixture
def serve(trained):
    servers = []

    def start(path=None, script=None, host="127.0.0.1"):
        server = explore.make_server(explore.Run(path or trained / "run", script), host, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(port, path, host=None):  # (status, content type, body); the path goes out as written, "../" too
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path, headers={} if host is None else {"Host": host})
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type"), response.read()


def png(body):
    return np.array(Image.open(io.BytesIO(body)).convert("RGB"))


def test_page_run_info_grid_walk_and_the_runs_files(serve):
    port = serve()
    status, kind, page = get(port, "/")
    assert status == 200 and kind.startswith("text/html") and b'id="grid"' in page and b"http://" not in page
    info = json.loads(get(port, "/api/info")[2])
    assert (info["script"], info["dataset"], info["epoch"], info["step"]) == ("dcgan", "mnist", 1, 4)
    assert info["flags"]["g_width"] == 8 and info["points"] is False and info["warning"] == ""
    status, kind, body = get(port, "/api/grid?n=16&seed=3")
    grid = png(body)
    assert status == 200 and kind == "image/png" and grid.shape == (74, 74, 3)  # 4 x (16 + 2) + 2 pixels a side
    assert get(port, "/api/grid?n=16&seed=3")[2] == body  # a seed is a fixed set of latent vectors
    assert get(port, "/api/grid?n=16&seed=4")[2] != body
    assert get(port, "/api/grid?n=16&seed=3&temperature=0.5")[2] != body
    status, _, body = get(port, "/api/walk?n=16&seed=3&a=0&b=5&steps=6")
    walk = png(body)
    assert status == 200 and walk.shape == (20, 6 * 18 + 2, 3)
    cell = lambda image, row, col: image[2 + 18 * row:18 * (row + 1), 2 + 18 * col:18 * (col + 1)].astype(int)
    assert np.abs(cell(walk, 0, 0) - cell(grid, 0, 0)).max() <= 2  # the walk starts at sample 0 ...
    assert np.abs(cell(walk, 0, 5) - cell(grid, 1, 1)).max() <= 2  # ... and ends at sample 5 (row 1, col 1)
    status, kind, body = get(port, "/run/metrics.csv")
    assert status == 200 and kind.startswith("text/csv") and body.startswith(b"kind,epoch,step")
    status, kind, body = get(port, "/run/samples/epoch_001.png")
    assert status == 200 and png(body).shape[2] == 3


@pytest.mark.parametrize("path", [
    "/api/grid?n=4", "/api/grid?n=257", "/api/grid?n=abc", "/api/grid?n=8.5", "/api/grid?seed=-1",
    "/api/grid?seed=x", "/api/grid?temperature=0", "/api/grid?temperature=nan", "/api/grid?label=3",
    "/api/walk?n=16&a=16", "/api/walk?b=-1", "/api/walk?steps=1", "/api/walk?steps=ten",
    "/run/ckpt.pt", "/run/run.lock", "/run/../ckpt.pt", "/run/%2e%2e/%2e%2e/etc/passwd", "/run/nothing.png",
    "/run//etc/passwd"])
def test_every_bad_request_is_a_400_with_a_one_line_json_error(serve, path):
    port = serve()
    status, kind, body = get(port, path)
    error = json.loads(body)["error"]
    assert status == 400 and kind == "application/json" and error and "\n" not in error, (path, error)
    assert get(port, "/api/grid?n=8")[0] == 200  # the server goes on
    assert get(port, "/nothing")[0] == 404


def test_a_rewritten_checkpoint_is_picked_up_and_a_half_written_one_keeps_the_model(serve, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    port = serve(run)
    before = get(port, "/api/grid?n=16")[2]
    dcgan.main([*TINY, "--data-dir", str(trained / "data"), "--epochs", "2", "--out-dir", str(run), "--resume"])
    info = json.loads(get(port, "/api/info")[2])
    assert (info["epoch"], info["step"], info["version"]) == (2, 8, 2)
    assert get(port, "/api/grid?n=16")[2] != before  # the new weights' samples
    assert info["fid"] is None
    with open(run / "metrics.csv", "a") as f:  # an epoch row as --fid-every writes it
        f.write(",".join(["epoch", "2", "8", "0"] + [""] * 5 + ["12.345"]) + "\n")
    assert json.loads(get(port, "/api/info")[2])["fid"] == "12.345"
    good = (run / "ckpt.pt").read_bytes()
    (run / "ckpt.pt").write_bytes(good[:len(good) // 2])  # as if caught while being written
    info = json.loads(get(port, "/api/info")[2])
    assert info["epoch"] == 2 and info["version"] == 2 and "kept the model of step 8" in info["warning"]
    assert get(port, "/api/grid?n=16")[0] == 200
    (run / "ckpt.pt").write_bytes(good)
    info = json.loads(get(port, "/api/info")[2])
    assert info["warning"] == "" and info["version"] == 3


def test_a_conditional_run_shows_a_row_a_class_or_one_class(serve, conditional):
    port = serve(conditional)
    info = json.loads(get(port, "/api/info")[2])
    assert info["classes"][:2] == ["0 - zero", "1 - one"] and len(info["classes"]) == 10
    rows = png(get(port, "/api/grid?n=64&seed=1")[2])  # rows of 64 // 10 = 6: classes 0 to 9, then 0
    assert rows.shape == (11 * 18 + 2, 6 * 18 + 2, 3)  # every class shows, classes 8 and 9 too
    sevens = png(get(port, "/api/grid?n=64&seed=1&label=7")[2])
    assert sevens.shape == (8 * 18 + 2, 8 * 18 + 2, 3)  # one class: 8 a row
    assert np.array_equal(png(get(port, "/api/grid?n=64&seed=1&label=-1")[2]), rows)  # -1: a row a class
    for k in (2, 9):  # row k is class k: the same pixels as the first images of that class alone
        alone = png(get(port, f"/api/grid?n=64&seed=1&label={k}")[2])
        picked = rows[2 + 18 * k:18 * (k + 1), 2:18].astype(int)  # sample 6 k
        assert np.abs(picked - alone[2 + 18 * (6 * k // 8):18 * (6 * k // 8 + 1),
                                     2 + 18 * (6 * k % 8):18 * (6 * k % 8 + 1)].astype(int)).max() <= 2
    status, _, walk = get(port, "/api/walk?n=16&seed=1&a=4&b=5&steps=4&label=-1")  # in class 1, sample 4's
    assert status == 200 and png(walk).shape == (20, 4 * 18 + 2, 3)
    for bad in ("label=10", "label=-2", "label=one"):
        status, _, body = get(port, f"/api/grid?{bad}")
        assert status == 400 and "label" in json.loads(body)["error"]


def test_concurrent_requests_all_answer(serve):
    port = serve()
    results = []
    threads = [threading.Thread(target=lambda s=seed: results.append(get(port, f"/api/grid?n=64&seed={s}")[0]))
               for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8


def test_a_hacked_copy_of_a_script_builds_the_networks(serve, trained, tmp_path):
    shutil.copy(ROOT / "dcgan.py", tmp_path / "my_gan.py")
    port = serve(script=tmp_path / "my_gan.py")
    assert get(port, "/api/grid?n=8")[0] == 200


def test_a_2d_run_shows_a_scatter_and_has_no_walk(serve, tmp_path):
    mlp_gan.main(["--steps-per-epoch", "3", "--epochs", "1", "--batch-size", "32", "--g-width", "16",
                  "--d-width", "16", "--device", "cpu", "--out-dir", str(tmp_path / "points")])
    port = serve(tmp_path / "points" / "ckpt.pt")
    assert json.loads(get(port, "/api/info")[2])["points"] is True
    status, kind, body = get(port, "/api/grid?n=256")
    assert status == 200 and png(body).shape[0] > 100
    assert get(port, "/api/walk")[0] == 400


def test_requests_addressed_to_another_host_name_are_refused(serve):
    port = serve()
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", ""):  # DNS rebinding, a proxy
        status, kind, body = get(port, "/api/info", host=host)
        assert status == 403 and kind == "application/json" and "\n" not in json.loads(body)["error"], host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):  # the page's own requests
        assert get(port, "/api/info", host=host)[0] == 200


def test_bound_to_every_interface_an_ip_address_is_answered_and_other_names_refused(serve):
    port = serve(host="0.0.0.0")  # what a browser on another machine sends: this machine's address
    for host in (f"192.168.1.20:{port}", f"10.0.0.7:{port}", f"[fe80::1]:{port}", f"127.0.0.1:{port}",
                 f"localhost:{port}", f"0.0.0.0:{port}"):
        assert get(port, "/api/info", host=host)[0] == 200, host
    for host in (f"evil.example:{port}", f"gpu-box.lan:{port}", f"192.168.1.20:{port + 1}", "192.168.1.20",
                 f"192.168.1.20:x", ""):  # a name can be rebound by another site; another port is not us
        assert get(port, "/api/info", host=host)[0] == 403, host
    assert get(serve(), "/api/info", host=f"192.168.1.20:{port}")[0] == 403  # bound to 127.0.0.1: names only


def test_a_request_the_client_drops_prints_nothing_and_the_next_is_answered(serve, capfd):
    port = serve()
    for _ in range(5):  # as the page does when a slider moves on: the grid's request abandoned mid-answer
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(f"GET /api/grid?n=64&seed=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed: a reset
        client.close()
    time.sleep(1)  # the server has written into the closed sockets
    status, kind, body = get(port, "/api/grid?n=16&seed=3")
    assert status == 200 and png(body).shape == (74, 74, 3)
    assert get(port, "/favicon.ico")[:2] == (204, "image/x-icon")  # a browser's request: no 404 in its console
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_checkpoint_that_names_another_script_needs_script(trained, tmp_path, capsys, monkeypatch):
    ck = torch.load(trained / "run" / "ckpt.pt", weights_only=True)
    ck["script"] = "fid"  # a sibling file, not a training script: never imported on a checkpoint's word
    torch.save(ck, tmp_path / "ckpt.pt")
    with pytest.raises(SystemExit) as e:
        explore.main([str(tmp_path), "--port", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--script" in err and "'fid'" in err
    monkeypatch.chdir(tmp_path)
    run = explore.Run(tmp_path, script=ROOT / "dcgan.py")  # named by the user: it runs, and the page says which
    assert run.info()["code"] == str((ROOT / "dcgan.py").resolve())
    monkeypatch.chdir(ROOT)  # a file under the current folder is named from there
    assert explore.Run(tmp_path, script=ROOT / "dcgan.py").info()["code"] == "dcgan.py"


def test_an_ipv6_host_is_served(trained):
    try:
        server = explore.make_server(explore.Run(trained / "run"), "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    connection = http.client.HTTPConnection("::1", port, timeout=60)
    connection.request("GET", "/api/info")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["script"] == "dcgan"
    server.shutdown()
    server.server_close()


def test_the_directions_are_orthonormal_and_sorted_by_their_spread(trained):
    components, std, seconds = explore.Run(trained / "run").directions()
    assert components.shape == (explore.DIRECTIONS, 16 * 4 * 4)  # the first transposed conv: 16 x 4 x 4
    assert torch.allclose(components @ components.T, torch.eye(explore.DIRECTIONS), atol=1e-5)
    assert torch.all(std[:-1] >= std[1:]) and std[-1] > 0 and seconds > 0


def test_edits_along_a_direction_move_the_grid_and_zero_offsets_leave_it(serve):
    port = serve()
    plain = get(port, "/api/grid?n=16&seed=3")[2]
    zero = ",".join(["0"] * explore.DIRECTIONS)
    assert get(port, f"/api/grid?n=16&seed=3&edit={zero}")[2] == plain  # the same bytes
    distance = lambda edit: np.abs(png(get(port, f"/api/grid?n=16&seed=3&edit={edit}")[2]).astype(int)
                                   - png(plain).astype(int)).mean()
    one, three = (",".join([str(v)] + ["0"] * (explore.DIRECTIONS - 1)) for v in (1, 3))
    assert 0 < distance(one) < distance(three)
    status, kind, strip = get(port, "/api/strip?n=16&seed=3&direction=0&sample=5")
    assert status == 200 and png(strip).shape == (20, 7 * 18 + 2, 3)  # 7 steps from -3 to +3
    middle = png(strip)[2:18, 2 + 3 * 18:18 * 4]  # offset 0: sample 5 as the plain grid shows it
    assert np.abs(middle.astype(int) - png(plain)[2 + 18:36, 2 + 18:36].astype(int)).max() <= 2
    for bad in ("grid?edit=1,2", f"grid?edit=4{zero[1:]}", f"grid?edit=x{zero[1:]}", f"grid?edit=nan{zero[1:]}",
                f"strip?direction={explore.DIRECTIONS}", "strip?direction=-1", "strip?n=16&sample=16"):
        status, _, body = get(port, f"/api/{bad}")
        assert status == 400 and "\n" not in json.loads(body)["error"], bad


def test_edits_keep_a_conditional_runs_classes(conditional):
    run = explore.Run(conditional)
    seen, real_forward = [], run.G.forward

    def forward(z, y=None):  # the labels G is given (none while the directions are measured: classes in turn)
        if y is not None:
            seen.append(y.tolist())
        return real_forward(z, y)
    run.G.forward = forward
    edit = ",".join(["2"] + ["-1"] * (explore.DIRECTIONS - 1))
    for query in ({"n": ["64"], "label": ["7"]}, {"n": ["64"]}):
        run.grid(query)
        run.grid({**query, "edit": [edit]})
        assert seen[-1] == seen[-2] and len(set(seen[-1])) == (1 if "label" in query else 10)
    run.strip({"n": ["64"], "sample": ["13"], "direction": ["1"]})  # sample 13: row 2 of 6 a row, class 2
    assert seen[-1] == [2] * 7


def test_a_2d_run_has_no_directions(serve, tmp_path):
    mlp_gan.main(["--steps-per-epoch", "3", "--epochs", "1", "--batch-size", "32", "--g-width", "16",
                  "--d-width", "16", "--device", "cpu", "--out-dir", str(tmp_path / "points")])
    port = serve(tmp_path / "points")
    for path in ("/api/directions", "/api/strip", f"/api/grid?edit={','.join(['1'] * explore.DIRECTIONS)}"):
        status, _, body = get(port, path)
        assert status == 400 and "2-D" in json.loads(body)["error"], path


@pytest.mark.parametrize("case", ["no checkpoint", "corrupt", "another kind", "bad device", "bad script"])
def test_bad_input_at_start_up_is_one_line_with_status_2(case, trained, tmp_path, capsys):
    argv = {"no checkpoint": [str(tmp_path)], "corrupt": [str(tmp_path / "ckpt.pt")],
            "another kind": [str(tmp_path / "weights.pt")], "bad device": [str(trained / "run"), "--device", "tpu"],
            "bad script": [str(trained / "run"), "--script", str(tmp_path / "missing.py")]}[case]
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "weights.pt")
    with pytest.raises(SystemExit) as e:
        explore.main(argv + ["--port", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and err.count("\n") == 1, err


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y chromium)")
def test_in_a_real_browser_the_grid_decodes_and_two_clicks_show_a_walk(serve, conditional, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    port = serve()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        def console(message):  # a request that failed (a 404) is an error in the console
            if message.type == "error":
                errors.append(message.text)
        page.on("console", console)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('grid').naturalWidth > 0")
        assert page.text_content("#title") == "dcgan.py on mnist"
        width = page.evaluate("document.getElementById('grid').naturalWidth")
        shown = page.evaluate("document.getElementById('grid').clientWidth")
        assert width == 8 * 18 + 2 and shown >= 2 * width  # 64 samples, enlarged by a whole factor
        cell = shown / width * 18
        page.click("#grid", position={"x": cell * 0.5, "y": cell * 0.5})  # sample 0
        page.click("#grid", position={"x": cell * 2.5, "y": cell * 1.5})  # sample 10: row 1, column 2
        page.wait_for_function("document.getElementById('walk').naturalWidth > 0")
        assert page.is_visible("#walkbox") and "sample 0 to sample 10" in page.text_content("#walkinfo")
        assert page.evaluate("document.getElementById('walk').naturalWidth") == 10 * 18 + 2
        page.wait_for_function("document.querySelectorAll('#curves canvas').length == 2")  # losses, D outputs
        assert page.is_hidden("#classbox")  # an unconditional run: no classes to pick
        page.screenshot(path=str(tmp_path / "explore.png"))
        page.wait_for_function("document.querySelectorAll('#sliders input').length == 8")  # the directions
        original = page.evaluate("document.getElementById('grid').src")
        page.fill("#sliders tr:first-child input", "2.5")  # the first slider, moved
        page.dispatch_event("#sliders tr:first-child input", "change")
        page.wait_for_function("document.getElementById('grid').src.includes('edit=2.5')")
        page.wait_for_function("document.getElementById('grid').complete")
        edited = page.evaluate("document.getElementById('grid').src")
        page.click("#reset")
        page.wait_for_function(f"document.getElementById('grid').src == {original!r}")  # the unedited grid
        with page.expect_download() as download:
            page.click("#sliders tr:first-child a")  # the first direction's strip
        strip = png(Path(download.value.path()).read_bytes())
        assert "edit=" not in original and strip.shape == (20, 7 * 18 + 2, 3) and edited != original
        page.goto(f"http://127.0.0.1:{serve(conditional)}/")  # a conditional run: pick a class
        page.wait_for_function("document.getElementById('grid').naturalWidth > 0")
        assert page.is_visible("#classbox") and page.eval_on_selector_all("#label option", "o => o.length") == 11
        page.select_option("#label", "3")
        page.wait_for_function("document.getElementById('grid').src.includes('label=3')")
        page.wait_for_function("document.getElementById('grid').complete")
        page.screenshot(path=str(tmp_path / "explore-conditional.png"))
        browser.close()
    assert errors == [] and (tmp_path / "explore.png").stat().st_size > 0


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y chromium)")
def test_strings_from_a_crafted_checkpoint_show_as_text_in_a_real_browser(serve, conditional, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    attack = '<img src=x onerror="window.hacked=1;alert(1)"><script>window.hacked=2</script>'
    ck = torch.load(conditional / "ckpt.pt", weights_only=True)
    ck["args"][attack] = attack  # a flag's name and value
    ck["args"]["classes"] = [attack] + ck["args"]["classes"][1:]  # a class name
    (tmp_path / "crafted").mkdir()
    torch.save(ck, tmp_path / "crafted" / "ckpt.pt")
    (tmp_path / "crafted" / "metrics.csv").write_text(f"kind,epoch,step,time,{attack}\nstep,1,1,0,0.5\n")
    port = serve(tmp_path / "crafted")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        errors, dialogs = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('grid').naturalWidth > 0")
        page.click("#flags >> xpath=..")  # open the flags
        page.wait_for_timeout(500)  # time for an injected handler to fire, were there one
        flags = page.text_content("#flags")
        assert f"--{attack}" in flags and flags.count(attack) == 2  # the name and the value, as text
        assert page.eval_on_selector_all("#flags img, #flags script, #label img", "e => e.length") == 0
        assert page.text_content("#label option:nth-child(2)") == f"0: {attack}"
        assert page.evaluate("window.hacked") is None and dialogs == [] and errors == []
        page.screenshot(path=str(tmp_path / "crafted.png"))
        browser.close()

"""Every hostile archive of the corpus: ``verify`` refuses it naming the file, ``unpack`` leaves
nothing behind, and running the (not) unpacked bundle the README's way runs nothing from the
sender. Marker files prove that no payload ran; a control run of the config payloads, extracted
unchecked and run as the old README said, proves that the payloads are live."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

import corpus
from mammoshare.exchange.layout import UnpackError
from mammoshare.exchange.pack import pack_bundle
from mammoshare.exchange.unpack import unpack_bundle
from mammoshare.exchange.signing import generate_signing_key
from mammoshare.exchange.verify import verify_bundle
from test_exchange import make_bundle

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (the http.server name)
        _Recorder.requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"1 2 3\n")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def exfil_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    server.shutdown()


def _context(root: Path, exfil_url: str) -> corpus.Context:
    root.mkdir(parents=True)
    keys = {}
    for who in ("sender", "other"):
        generate_signing_key(root / f"{who}.key", root / f"{who}.pub")
        keys[f"{who}_key"], keys[f"{who}_pub"] = root / f"{who}.key", root / f"{who}.pub"
    bundle = make_bundle(root / "src")
    base = pack_bundle(bundle, root / "clean.zip", sign_key=keys["sender_key"], no_audit=True).path
    (root / "markers").mkdir()
    (root / "work").mkdir()
    return corpus.Context(base=base, keys=keys, markers=root / "markers", work=root / "work", exfil_url=exfil_url)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, exfil_server):
    return _context(tmp_path_factory.mktemp("attacks") / "corpus", exfil_server[0])


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """The unpack targets of every case, run the README's way at the end."""
    return []


def test_the_clean_archive_passes(ctx):
    report = verify_bundle(ctx.base, trusted_keys=[ctx.keys["sender_pub"]])
    assert report.passed(), report.text()


@pytest.mark.parametrize("attack", corpus.ATTACKS, ids=lambda a: a.__name__)
def test_refused_naming_the_file_and_nothing_unpacked(ctx, targets, attack, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        archive, culprit = attack(ctx)
    options = {"trusted_keys": [ctx.keys["sender_pub"]], "train_datalist": None}
    if attack.__name__ == "model_card_names_a_patient":
        datalist = tmp_path / "train.json"
        datalist.write_text(json.dumps({"training": [{"image": "a.dcm", "patient_id": "98429c0bdf78c0c7", "label": 1, "box": None}],
                                        "validation": [], "test": []}))
        options["train_datalist"] = datalist
    started = time.time()
    report = verify_bundle(archive, **options)
    assert time.time() - started < 60
    assert not report.passed(), report.text()
    failed = [c for c in report.failures()]
    spellings = (culprit, repr(culprit)[1:-1])  # names are shown quoted (backslashes, NUL escaped)
    assert any(s in c.detail for c in failed for s in spellings), f"{culprit!r} not named:\n{report.text()}"
    assert all(c.name != "internal" for c in report.checks), report.text()  # a refusal, never a crash
    # also with every waiver a receiver can give: --allow-unsigned, and --trust (consent for the config only)
    for extra in ({}, {"trust": True, "allow_unsigned": True}):
        waived = ({"signature"} if extra.get("allow_unsigned") else set()) | ({"inference config"} if extra.get("trust") else set())
        if {c.name for c in report.failures()} <= waived:
            continue  # only what the receiver explicitly waived is wrong: that is its recorded consent
        target = tmp_path / "received" / "bundle"
        with pytest.raises(UnpackError, match="refused"):
            unpack_bundle(archive, target, **options, **extra)
        assert not target.exists() and not list((tmp_path / "received").glob(".*")) if (tmp_path / "received").exists() else True
    targets.append(tmp_path / "received" / "bundle")
    assert not list(ctx.markers.iterdir()), "a payload ran during verify or unpack"


_RUN_README_WAY = """
import json, sys
from monai.bundle import run
results = {}
for target in sys.argv[1:]:
    try:
        run(config_file=target + "/configs/inference.json", bundle_root=target, num_samples=1,
            output_dir=target + "_out", device="cpu", logging_file=False)
        results[target] = "ran"
    except BaseException as e:
        results[target] = type(e).__name__ + ": " + str(e)[:200]
print(json.dumps(results))
"""


def test_running_the_readme_way_runs_nothing(ctx, targets, exfil_server):
    assert len(targets) == len(corpus.ATTACKS)
    result = subprocess.run([sys.executable, "-c", _RUN_README_WAY, *map(str, targets)], capture_output=True, text=True,
                            timeout=300, env=ENV)
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(outcome != "ran" for outcome in outcomes.values()), outcomes
    assert not list(ctx.markers.iterdir()) and not exfil_server[1], "a payload ran or the network was used"


def test_control_the_config_payloads_are_live(tmp_path, exfil_server):
    """Extracted without checks and run as the old README said, the config payloads do run:
    so the empty marker folder above means something."""
    control = _context(tmp_path / "control", exfil_server[0])
    folders = []
    for attack in corpus.ATTACKS:
        if attack.__name__ in (*corpus.CONFIG_PAYLOADS, "network_exfiltration"):
            archive, _ = attack(control)
            folder = tmp_path / "unchecked" / attack.__name__
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(folder)
            folders.append(str(folder))
    before = len(exfil_server[1])
    subprocess.run([sys.executable, "-c", _RUN_README_WAY, *folders], capture_output=True, text=True, timeout=300, env=ENV)
    fired = sorted(p.name for p in control.markers.iterdir())
    assert fired == sorted(corpus.CONFIG_PAYLOADS), fired
    assert len(exfil_server[1]) > before and "exfil=dcgan_bcdr" in exfil_server[1][-1]
    del exfil_server[1][before:]  # the requests of the control only


_VERIFY_MEMORY = """
import json, resource, sys, time
from mammoshare.exchange.verify import verify_bundle
start = time.time()
report = verify_bundle(sys.argv[1], trusted_keys=[sys.argv[2]])
print(json.dumps({"passed": report.passed(), "text": report.text(), "seconds": time.time() - start,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.parametrize("attack", [corpus.zip_bomb_declared, corpus.zip_bomb_ratio, corpus.generator_width(250_000)], ids=lambda a: a.__name__)
def test_verify_memory_and_time_are_bounded(ctx, attack):
    """The 1.5 MB archive declaring 3 x 419 MB snapshots and the width-250000 generator drove verify
    to 2.5 GB; now they are refused within the baseline of an interpreter with torch loaded."""
    archive, culprit = attack(ctx)
    baseline = subprocess.run([sys.executable, "-c", "import resource, torch, monai, mammoshare.exchange.verify; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                              capture_output=True, text=True, timeout=300, env=ENV)
    result = subprocess.run([sys.executable, "-c", _VERIFY_MEMORY, str(archive), str(ctx.keys["sender_pub"])],
                            capture_output=True, text=True, timeout=300, env=ENV)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert not measured["passed"] and culprit in measured["text"]
    assert measured["max_rss_mb"] < float(baseline.stdout.strip()) + 300, measured["max_rss_mb"]
    assert measured["seconds"] < 60

"""The benchmarks run end to end and print their tables: tiny batches, one timed call, Paddle only (PyTorch is
not a test dependency). The numbers are not checked, only that they are there and positive."""

import re

import pytest

import onednn_conv
from bench import bench_conv, bench_train

NUM = r"([0-9]+(?:\.[0-9]+)?)"


def test_bench_train_table_and_the_onednn_lever_reports_what_ran(capsys):
    argv = [
        "--batch-sizes",
        "2",
        "--quick",
        "--iters",
        "1",
        "--warmup",
        "1",
        "--no-torch",
        "--device",
        "cpu",
        "--levers",
        "--only",
        "onednn",
        "--ngf",
        "8",
    ]
    assert bench_train.main(argv) == 0
    out = capsys.readouterr().out
    assert "**Device** Paddle cpu." in out
    row = re.search(rf"^\| 2 \| {NUM} \| - \| - \| {NUM}% \| - \| {NUM} \| - \| \*\*{NUM}x\*\* \|", out, re.M)
    assert row, out
    assert float(row.group(1)) > 0 and float(row.group(2)) > 0 and float(row.group(3)) > 0  # oneDNN on, and off
    # the lever's row says how many oneDNN primitives ran (ONEDNN_VERBOSE), so a no-op flag shows as one
    lever = re.search(
        rf"^\| onednn \| tuned \+ FLAGS_use_onednn=1 \(oneDNN primitives run: (\d+)\) \| {NUM} \|", out, re.M
    )
    assert lever, out
    assert float(lever.group(2)) > 0


def test_bench_conv_times_every_convolution_of_the_network(capsys):
    assert bench_conv.main(["--batch", "2", "--reps", "1", "--no-torch"]) == 0
    out = capsys.readouterr().out
    onednn = rf" \| {NUM} \| {NUM} \| \d+ \| {NUM}x" if onednn_conv.available() else ""  # its column where it runs
    paddle_cols = rf" \| {NUM} \| {NUM} \| {NUM} \| \d+ \| {NUM} \| {NUM}x"
    rows = re.findall(rf"^\| ([GD] conv\S* \d+->\d+, \d+->\d+ px){paddle_cols}{onednn} \|$", out, re.M)
    names = [r[0] for r in rows]
    assert names == [
        "G convT 100->512, 1->4 px",
        "G convT 512->256, 4->8 px",
        "G convT 256->128, 8->16 px",
        "G convT 128->64, 16->32 px",
        "G convT 64->3, 32->64 px",
        "D conv 3->64, 64->32 px",
        "D conv 64->128, 32->16 px",
        "D conv 128->256, 16->8 px",
        "D conv 256->512, 8->4 px",
        "D conv 512->1, 4->1 px",
    ], out
    onednn = r" \| \d+ \| \d+ \|  \| [0-9.]+x" if onednn_conv.available() else ""
    assert re.search(rf"^\| all \| \d+ \| \d+ \| \d+ \|  \| \d+ \| [0-9.]+x{onednn} \|$", out, re.M), out


def test_bench_train_gpu_lever_table_is_assembled_by_what_the_gpu_supports():
    names = lambda sup: [r[0] for r in bench_train.gpu_table(sup)]  # noqa: E731
    assert names({"fp16": True, "bf16": True}) == ["fp32", "fp16", "bf16", "log-every", "on-device", "gpu-all"]
    assert names({"fp16": True, "bf16": False}) == ["fp32", "fp16", "log-every", "on-device", "gpu-all"]
    rows = {r[0]: r for r in bench_train.gpu_table({"fp16": True, "bf16": True})}
    assert rows["gpu-all"][3] == {"data": "device", "log_every": 20, "amp": "bf16"}
    assert rows["fp32"][3] == {"data": "host", "log_every": 1}
    assert all(r[1] == "fp32" for n, r in rows.items() if n != "fp32")
    assert "amp" not in bench_train.gpu_table({"fp16": False, "bf16": False})[-1][3]


def test_bench_batches_from_host_and_device_are_the_same_batches():
    import itertools

    host, dev = bench_train.bench_batches("host", 4), bench_train.bench_batches("device", 4)
    for a, b in itertools.islice(zip(host, dev, strict=True), 20):  # 16 batches per epoch: into the second epoch
        assert a.numpy().tobytes() == b.numpy().tobytes()
    assert bench_train.bench_batches("fixed", 4) is None


@pytest.mark.slow
def test_bench_train_gpu_levers_run_on_the_cpu(capsys):
    """The GPU table's code paths (host loader, device copy, a fetch every 20) on the CPU, where amp is float32."""
    argv = [
        "--batch-sizes",
        "2",
        "--quick",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--no-torch",
        "--device",
        "cpu",
        "--gpu-levers",
    ]
    assert bench_train.main(argv) == 0
    out = capsys.readouterr().out
    for name in ("fp32", "log-every", "on-device", "gpu-all"):
        row = re.search(rf"^\| {name} \| .* \| {NUM} \| ", out, re.M)
        assert row and float(row.group(1)) > 0, out
    assert not re.search(r"^\| (fp16|bf16) \|", out, re.M)  # a CPU runs neither


def test_bench_app_table(capsys):
    from conftest import need

    need("gradio_client", "bench/bench_app.py serves the app")
    from bench import bench_app

    assert bench_app.main(["--width", "8", "--rounds", "1", "--faces", "4"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(rf"^\| (.+?) \| {NUM} \| 1 \| {NUM}x \|$", out, re.M)
    assert len(rows) == 6 and all(float(t) >= 0 for _, t, _ in rows), out  # (4 tiny faces: ~1 ms)
    assert "load average" in out


def test_profile_charges_each_microsecond_to_the_innermost_named_event():
    from bench import profile_train

    x = lambda name, ts, dur: {"ph": "X", "name": name, "ts": ts, "dur": dur}  # noqa: E731
    events = [
        x("ProfileStep#0", 0, 100),
        x("Conv2D", 0, 30),  # a layer's forward (Paddle's custom op inside, untraced): conv forward
        x("empty dygraph[1.2 us]", 5, 5),  # an unnamed op inside it: still the convolution's
        x("leaky_relu dygraph[3.0 us]", 30, 10),
        x("Global_GradNodePyLayer__Conv2D", 40, 40),
        x("Global_LeakyReluGradNode[2 us]", 80, 8),
        x("adam_ dygraph", 90, 6),
        {"ph": "M", "name": "process_name"},  # metadata: ignored
    ]
    got = profile_train.charge(events)
    assert got == {
        "conv forward": 30,
        "activation forward": 10,
        "conv backward": 40,
        "activation backward": 8,
        "Adam": 6,
        "rest": 6,  # the step's own time that no named event holds
    }
    torch_names = ["aten::convolution_backward", "aten::native_batch_norm", "aten::leaky_relu_backward"]
    assert [profile_train.kind_of(n) for n in torch_names] == ["conv backward", "BN forward", "activation backward"]
    assert profile_train.steps([x("a", -5, 1), *events])[0]["name"] == "ProfileStep#0"  # before the first step: out


def test_bench_train_gives_pytorch_the_malloc_settings_paddle_gets():
    """--torch-malloc's environment is device.keep_freed_memory's mallopt(3) settings, parameter for parameter."""
    import device

    names = {device.M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", device.M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_"}
    assert bench_train.MALLOC_SAME_ENV == {names[k]: str(v) for k, v in device.KEEP_MALLOC.items()}

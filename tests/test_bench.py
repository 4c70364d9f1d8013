"""The benchmarks run end to end and print their tables: tiny batches, one timed call, Paddle only (PyTorch is
not a test dependency). The numbers are not checked, only that they are there and positive."""

import re

import onednn_conv
from bench import bench_conv, bench_train

NUM = r"([0-9]+(?:\.[0-9]+)?)"


def test_bench_train_table_and_the_onednn_lever_reports_what_ran(capsys):
    argv = ["--batch-sizes", "2", "--quick", "--iters", "1", "--warmup", "1", "--no-torch", "--device", "cpu",
            "--levers", "--only", "onednn"]  # fmt: skip
    assert bench_train.main(argv) == 0
    out = capsys.readouterr().out
    assert "**Device** Paddle cpu." in out
    row = re.search(rf"^\| 2 \| {NUM} \| - \| - \| {NUM}% \| - \| {NUM} \| - \| \*\*{NUM}x\*\* \|", out, re.M)
    assert row, out
    assert float(row.group(1)) > 0 and float(row.group(2)) > 0 and float(row.group(3)) > 0  # oneDNN on, and off
    # the lever's row says how many oneDNN primitives ran (ONEDNN_VERBOSE), so a no-op flag shows as one
    lever = re.search(rf"^\| onednn \| tuned \+ FLAGS_use_onednn=1 \(oneDNN primitives run: (\d+)\) \| {NUM} \|", out, re.M)
    assert lever, out
    assert float(lever.group(2)) > 0


def test_bench_conv_times_every_convolution_of_the_network(capsys):
    assert bench_conv.main(["--batch", "2", "--reps", "1", "--no-torch"]) == 0
    out = capsys.readouterr().out
    onednn = rf" \| {NUM} \| {NUM} \| \d+ \| {NUM}x" if onednn_conv.available() else ""  # its column where it runs
    paddle_cols = rf" \| {NUM} \| {NUM} \| {NUM} \| \d+ \| {NUM} \| {NUM}x"
    rows = re.findall(rf"^\| ([GD] conv\S* \d+->\d+, \d+->\d+ px){paddle_cols}{onednn} \|$", out, re.M)
    names = [r[0] for r in rows]
    assert names == ["G convT 100->512, 1->4 px", "G convT 512->256, 4->8 px", "G convT 256->128, 8->16 px",
                     "G convT 128->64, 16->32 px", "G convT 64->3, 32->64 px", "D conv 3->64, 64->32 px",
                     "D conv 64->128, 32->16 px", "D conv 128->256, 16->8 px", "D conv 256->512, 8->4 px",
                     "D conv 512->1, 4->1 px"], out  # fmt: skip
    onednn = r" \| \d+ \| \d+ \|  \| [0-9.]+x" if onednn_conv.available() else ""
    assert re.search(rf"^\| all \| \d+ \| \d+ \| \d+ \|  \| \d+ \| [0-9.]+x{onednn} \|$", out, re.M), out

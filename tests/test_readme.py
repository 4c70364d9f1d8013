"""README.md and README_zh.md, the user pages under docs/ and their _zh twins: the same commands in both languages,
links and pictures that exist, no link out of the repository, front pages of about two screens, no line break inside
Chinese text, README commands that run (their --help), and a date and machine beside every measured time."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

READMES = {"en": ROOT / "README.md", "zh": ROOT / "README_zh.md"}
DOCS = ROOT / "docs"
# user pages: English + Chinese twin (internals such as docs/performance.md are English only)
USER_PAGES = ["training", "generating", "model-files", "troubleshooting", "tutorial-differences"]
PAIRS = [(ROOT / "README.md", ROOT / "README_zh.md")] + [(DOCS / f"{p}.md", DOCS / f"{p}_zh.md") for p in USER_PAGES]
PAGES = sorted({*READMES.values(), ROOT / "CONTRIBUTING.md", *DOCS.glob("*.md")})
ZH_PAGES = sorted(p for p in PAGES if p.stem.endswith("_zh"))

FENCE = re.compile(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)|<(https?://[^>\s]+)>|src=\"([^\"]+)\"")
COMMENT = re.compile(r"(^|\s)#(?!!).*$")  # a shell or Python comment: translated, so not compared
CJK = "\u2e80-\u9fff\u3000-\u303f\uff00-\uffef"  # CJK ideographs and CJK / full-width punctuation
CJK_BREAK = re.compile(rf"[{CJK}][ \t]*\n[ \t]*[{CJK}]")  # a list item or table row may follow
# a measured time or speed: 17 s, 2.5 minutes, 7 hours, 45 img/s, 3 分 17 秒, 约 7 小时
MEASURE = re.compile(
    r"\b\d[\d.,]*\s*(?:ms|s|min|minutes?|hours?|h|img/s)(?![\w/])|\d[\d.,]*\s*(?:秒|分钟|分|小时)(?![\u4e00-\u9fff]*/)"
)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
MACHINE = re.compile(r"\b(?:CPU|GPU|VM|Xeon|EPYC)\b|虚拟机")
# commands a README may show that are not this project's scripts (they set up, or need the network)
SETUP = ("pip ", "python3 -m venv", "python -m venv", "source ", "cd ", "wget ", "sha256sum ", "visualdl ", "git ")


def text(lang: str) -> str:
    return READMES[lang].read_text(encoding="utf-8")


def code_lines(md: str, kinds: tuple[str, ...] | None = None) -> list[str]:
    """Every line of every fenced code block (of the given kinds: bash, python, text), comments dropped, in order."""
    lines = []
    for kind, block in FENCE.findall(md):
        if kinds is not None and kind.strip() not in kinds:
            continue
        for line in block.splitlines():
            line = COMMENT.sub("", line).strip() if kind.strip() != "text" else line.strip()
            if line:
                lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens (CJK kept)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: str) -> set[str]:
    prose = FENCE.sub("", md)
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", prose, re.M)}


def prose_units(md: str) -> list[str]:
    """The prose of a page in units that one date should cover: paragraphs, and each list item or table row alone."""
    units = []
    for block in re.split(r"\n[ \t]*\n", FENCE.sub("", md)):
        units += [u for u in re.split(r"\n(?=[ \t]*(?:[-*|] |\d+\. |\|))", block) if u.strip()]
    return units


def undated_measures(md: str) -> list[str]:
    return [u.strip() for u in prose_units(md) if MEASURE.search(u) and not (DATE.search(u) and MACHINE.search(u))]


def test_parsers_find_blocks_measures_and_breaks():
    md = "x\n```bash\npython a.py --x 1   # run it\n# only a comment\n```\n\n   ```python\nf(1)  # 注释\n   ```\n"
    assert code_lines(md) == ["python a.py --x 1", "f(1)"]
    assert code_lines(md, ("bash",)) == ["python a.py --x 1"]
    assert slug("Preparing data: `pretreat.py`") == "preparing-data-pretreatpy"
    assert slug("CelebA 分步指南") == "celeba-分步指南"
    assert slug("图像修复：`complete.py`") == "图像修复completepy"
    page = "A demo run took 3 min 17 s.\n\nIt took 2.5 minutes (2026-12-01, 2-core VM).\n\n- 45 img/s\n- 0.88 of faces"
    assert undated_measures(page) == ["A demo run took 3 min 17 s.", "- 45 img/s"]
    assert undated_measures("共用 3 分 17 秒。") and not undated_measures("8 个 epoch，batch 128，2.5 GB，Python 3.11")
    assert not undated_measures("用了 2 分 33 秒（2026-12-04，2 核 AMD EPYC 虚拟机）")
    assert CJK_BREAK.search("训练\n教程") and CJK_BREAK.search("模型，\n  训练")
    assert not CJK_BREAK.search("训练\n\n教程")
    assert not CJK_BREAK.search("模型。\n- 训练") and not CJK_BREAK.search("解压。\n2. 把")
    assert not CJK_BREAK.search("train\n教程") and not CJK_BREAK.search("| 中 |\n| 文 |")


def test_every_command_of_one_readme_is_in_the_other():
    en, zh = code_lines(text("en")), code_lines(text("zh"))
    assert len(en) > 10
    assert sorted(set(en) - set(zh)) == [], "in README.md only"
    assert sorted(set(zh) - set(en)) == [], "in README_zh.md only"
    assert en == zh  # and in the same order


@pytest.mark.parametrize("en_page, zh_page", PAIRS[1:], ids=USER_PAGES)
def test_each_user_page_and_its_chinese_twin_show_the_same_commands(en_page, zh_page):
    en, zh = (code_lines(p.read_text(encoding="utf-8")) for p in (en_page, zh_page))
    assert en == zh, f"{en_page.name} and {zh_page.name} differ: {sorted(set(en) ^ set(zh))}"


@pytest.mark.parametrize("en_page, zh_page", PAIRS, ids=["README", *USER_PAGES])
def test_each_page_links_its_twin_at_the_top(en_page, zh_page):
    assert f"]({zh_page.name})" in "\n".join(en_page.read_text(encoding="utf-8").splitlines()[:5])
    assert f"]({en_page.name})" in "\n".join(zh_page.read_text(encoding="utf-8").splitlines()[:5])


def test_the_same_spots_are_left_for_features_in_both():
    spots = {lang: re.findall(r"<!-- section: ([\w-]+) -->", text(lang)) for lang in READMES}
    assert spots["en"] == spots["zh"]


def test_the_readmes_are_front_pages_of_about_two_screens():
    assert READMES["en"].stat().st_size <= 12_000
    assert READMES["zh"].stat().st_size <= 14_000  # a Chinese character takes 3 bytes
    for lang, md in (("en", text("en")), ("zh", text("zh"))):
        heads = re.findall(r"^## .+$", FENCE.sub("", md), re.M)
        assert 6 <= len(heads) <= 9, (lang, heads)
        assert "make test" not in md.split("\n## ", 3)[2], "make test belongs under contributing, not the quick start"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_pictures_exist_and_stay_in_the_repository(page):
    md = page.read_text(encoding="utf-8")
    for word in ["shared/reference", "../shared", "/work/wt", "/work/main", "spec.md", "issue2", "issue1"]:
        assert word not in md.lower(), f"{page.name} mentions {word!r}"
    targets = [next(g for g in m.groups() if g) for m in LINK.finditer(FENCE.sub("", md))]
    assert targets, f"{page.name} links nothing"
    for target in targets:
        if re.match(r"https?://", target):
            continue  # a public web page (CelebA, AI Studio, Paddle's install page)
        assert not target.startswith(("/", "file:")), target
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target} does not exist"
        assert file.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        if anchor:
            assert anchor in anchors(file.read_text(encoding="utf-8")), f"{page.name}: no heading for {target}"


@pytest.mark.parametrize("lang", list(READMES))
def test_readme_stands_alone(lang):
    md = text(lang)
    for word in ["issue", "../"]:
        assert word not in md.lower(), f"{READMES[lang].name} mentions {word!r}"


@pytest.mark.parametrize("page", ZH_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_line_break_between_two_chinese_characters(page):
    md = page.read_text(encoding="utf-8")
    breaks = [md[max(0, m.start() - 10) : m.end() + 10] for m in CJK_BREAK.finditer(md)]
    assert not breaks, f"{page.name}: a line break inside Chinese text shows as a stray space: {breaks}"


@pytest.mark.parametrize("page", [*READMES.values(), *(DOCS / f"{p}.md" for p in USER_PAGES)], ids=lambda p: p.name)
def test_measured_times_carry_a_date_and_a_machine(page):
    assert undated_measures(page.read_text(encoding="utf-8")) == []
    if page.name.startswith("README"):
        twin = page.with_name("README_zh.md")
        assert undated_measures(twin.read_text(encoding="utf-8")) == []


def split_commands(line: str) -> list[list[str]]:
    return [shlex.split(part) for part in line.split("&&")]


def readme_and_docs_commands() -> list[tuple[str, list[str]]]:
    """(page name, argv) of every shell command in README.md and the English user pages."""
    out = []
    for page in [READMES["en"], *(DOCS / f"{p}.md" for p in USER_PAGES)]:
        for line in code_lines(page.read_text(encoding="utf-8"), ("bash",)):
            out += [(page.name, argv) for argv in split_commands(line)]
    return out


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """`python SCRIPT --help` of every script the pages run, started together (each imports Paddle)."""
    scripts = sorted({a for _, argv in readme_and_docs_commands() for a in argv if a.endswith(".py")})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = {
        s: subprocess.Popen(
            [sys.executable, s, "--help"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for s in scripts
    }
    return {s: subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for s, p in procs.items()}


def test_every_command_runs_its_help_and_knows_its_flags(helps):
    seen = set()
    for page, argv in readme_and_docs_commands():
        line = " ".join(argv)
        if line.startswith(SETUP) or line in seen:
            continue
        seen.add(line)
        if argv[0] == "make":
            r = subprocess.run(["make", "-n", *argv[1:], "VIRTUAL_ENV=x", "PY=python"], cwd=ROOT, capture_output=True)
            assert r.returncode == 0, f"{page}: {line}: no such make target"
            continue
        assert argv[0] == "python", f"{page}: {line}: neither a setup command nor this project's script"
        script = next((a for a in argv if a.endswith(".py")), None)
        assert script and (ROOT / script).is_file(), f"{page}: {line}: no such script"
        h = helps[script]
        assert h.returncode == 0 and "usage:" in h.stdout, f"{script} --help: {h.stderr[-500:]}"
        flags = [a.split("=")[0] for a in argv[argv.index(script) + 1 :] if a.startswith("--")]
        unknown = [f for f in flags if not re.search(rf"{re.escape(f)}\b", h.stdout)]
        assert not unknown, f"{page}: {line}: {script} has no {unknown}"
    assert len(seen) > 20


def test_readme_paths_work_from_the_folder_it_says_to_use():
    for lang in READMES:
        md = text(lang)
        assert "cd ~/work/dcgan-faces-paddle" in md
        assert "--src ~/data/data39207/img_align_celeba.zip" in md  # absolute: AI Studio mounts datasets under ~/data
        assert "--src data/data39207" not in md
    nb = (ROOT / "DCGAN.ipynb").read_text(encoding="utf-8")
    assert "~/data/data39207/img_align_celeba.zip" in nb and "`data/data39207" not in nb

"""README.md and README_zh.md: the same commands, linked both ways, and standing alone (no link out of "
"the repository)."""

import re

import pytest

from conftest import ROOT

READMES = {"en": ROOT / "README.md", "zh": ROOT / "README_zh.md"}
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)|<(https?://[^>\s]+)>|src=\"([^\"]+)\"")
COMMENT = re.compile(r"(^|\s)#(?!!).*$")  # a shell or Python comment: translated, so not compared


def text(lang: str) -> str:
    return READMES[lang].read_text(encoding="utf-8")


def code_lines(md: str) -> list[str]:
    """Every line of every fenced code block, comments dropped, in order."""
    lines = []
    for block in FENCE.findall(md):
        for line in block.splitlines():
            line = COMMENT.sub("", line).strip()
            if line:
                lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens (CJK kept)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: str) -> set[str]:
    prose = FENCE.sub("", md)
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", prose, re.M)}


def test_code_parser_finds_blocks_and_drops_comments():
    md = "x\n```bash\npython a.py --x 1   # run it\n# only a comment\n```\n\n   ```python\nf(1)  # 注释\n   ```\n"
    assert code_lines(md) == ["python a.py --x 1", "f(1)"]
    assert slug("Preparing data: `pretreat.py`") == "preparing-data-pretreatpy"
    assert slug("CelebA 分步指南") == "celeba-分步指南"


def test_every_command_of_one_readme_is_in_the_other():
    en, zh = code_lines(text("en")), code_lines(text("zh"))
    assert len(en) > 20
    assert sorted(set(en) - set(zh)) == [], "in README.md only"
    assert sorted(set(zh) - set(en)) == [], "in README_zh.md only"
    assert en == zh  # and in the same order


def test_the_readmes_link_each_other_at_the_top():
    assert "](README_zh.md)" in "\n".join(text("en").splitlines()[:5])
    assert "](README.md)" in "\n".join(text("zh").splitlines()[:5])


def test_the_same_spots_are_left_for_features_in_both():
    spots = {lang: re.findall(r"<!-- section: ([\w-]+) -->", text(lang)) for lang in READMES}
    assert spots["en"] == spots["zh"]


@pytest.mark.parametrize("lang", list(READMES))
def test_readme_stands_alone(lang):
    md = text(lang)
    for word in ["issue", "shared/spec", "../", "spec.md"]:
        assert word not in md.lower(), f"{READMES[lang].name} mentions {word!r}"
    heads = anchors(md)
    targets = [next(g for g in m.groups() if g) for m in LINK.finditer(FENCE.sub("", md))]
    assert targets
    for target in targets:
        if re.match(r"https?://", target):
            continue  # a public web page (CelebA, AI Studio, Paddle's install page)
        assert not target.startswith(("/", "file:")), target
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).exists(), f"{READMES[lang].name}: {target} does not exist"
        if anchor:
            assert anchor in (anchors((ROOT / path).read_text(encoding="utf-8")) if path else heads), (
                f"{READMES[lang].name}: no heading for {target}"
            )

"""README and docs/: short enough to read, every page linked, every command as written accepted."""
import re
import shlex
from pathlib import Path

import pytest

from benchmarks.quality.__main__ import parse_args as quality_parse_args
from monet_utils.__main__ import build_parser

REPO = Path(__file__).resolve().parents[1]
USER_PAGES = sorted((REPO / "docs").glob("*.md"))
LAB_PAGES = sorted((REPO / "docs" / "lab").glob("*.md"))  # dated runs and the lent machines: linked, not read first
PAGES = [REPO / "README.md", *USER_PAGES, *LAB_PAGES]


def commands(page: Path) -> list[str]:
    """The shell lines of a page's code blocks, continuations joined, comments dropped."""
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", page.read_text(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split(" #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 8 * 1024
    linked = set(re.findall(r"\]\((docs/[^)]+)\)", readme))
    pages = {link.split("#")[0] for link in linked}
    assert all((REPO / page).exists() for page in pages), pages
    assert {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")} <= pages
    for page, anchor in (link.split("#") for link in linked if "#" in link):
        assert anchor in heading_anchors(REPO / page), (page, anchor)


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: p.name)
def test_a_user_page_is_short_enough_to_read(page):
    assert len(page.read_bytes()) <= 10 * 1024, f"{page.name}: move dated runs and tables to docs/lab/"


def test_every_lab_page_is_linked_from_a_user_page_and_its_links_resolve():
    assert LAB_PAGES
    user_text = "".join(page.read_text() for page in USER_PAGES)
    for page in LAB_PAGES:
        assert f"lab/{page.name}" in user_text, page.name
    for page in [*USER_PAGES, *LAB_PAGES]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


# The command lines the docs show, by module: each must parse as written.
PARSERS = {"monet_utils": lambda: build_parser().parse_args, "benchmarks.quality": lambda: quality_parse_args}


# The lab's pages keep each run's command as it was run, with the tools of that day.
@pytest.mark.parametrize("page", [REPO / "README.md", *USER_PAGES], ids=lambda p: p.name)
def test_every_command_line_is_accepted_as_written(page):
    checked = 0
    for line in commands(page):
        words = shlex.split(line.replace("$OUT", "out"))
        module = words[words.index("-m") + 1] if "-m" in words else None
        if module in PARSERS:
            try:
                PARSERS[module]()(words[words.index("-m") + 2:])
            except SystemExit as exit_:
                assert exit_.code == 0, f"{page.name}: {line}"  # --help exits 0
            checked += 1
        for word in words:  # scripts and files the line names must exist
            if word == module:
                word = word.replace(".", "/")
            if re.fullmatch(r"(benchmarks|notebooks|requirements)[\w/.-]*", word) and not word.endswith("/"):
                assert (REPO / word).exists(), f"{page.name}: {word} in {line}"
    if page.name == "README.md":
        assert checked >= 3

"""The manual pages (docs/man/, built by `make man` into $ZCD_BUILD/man/).

Pure checks, no daemon and no container: every flag a program's --help
prints (and, for zctr, each command's own --help) is in that program's page,
every page has the sections a reader looks for, and groff reads every page
without a warning.  A flag added to a program without a word in its page
fails here."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILD, REPO

MAN = BUILD / "man"
# program -> its page
PROGRAMS = {"zcd": "zcd.8", "zctr": "zctr.1", "zcd-shim": "zcd-shim.8", "zcd-oci": "zcd-oci.8"}
PAGES = list(PROGRAMS.values()) + ["zcd-protocol.7"]
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "FILES", "ENVIRONMENT",
            "EXIT STATUS", "EXAMPLES", "SEE ALSO")
# A long or short flag standing alone: not the "-compatible" of
# "runc-compatible", not the "-1" of "-1 = none".
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])")


@pytest.fixture(scope="module")
def pages():
    """Builds the pages (a no-op when they are up to date) and renders each
    as plain text, wide enough that no flag is broken across lines."""
    build = os.path.relpath(BUILD, REPO)
    made = subprocess.run(["make", "-s", f"BUILD={build}", "man"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, f"make man failed:\n{made.stdout}{made.stderr}"
    return {page: _render(MAN / page) for page in PAGES}


def _render(path, width=250):
    out = subprocess.run(["groff", "-t", "-man", "-Tascii", "-P-cbou", f"-rLL={width}n", str(path)],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out


def _help(argv):
    res = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=10,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{argv} --help exited {res.returncode}: {res.stderr}"
    assert res.stdout.strip(), f"{argv} --help printed nothing"
    return res.stdout


def _flags(text):
    return sorted(set(FLAG.findall(text)))


def _missing(flags, page_text):
    return [f for f in flags
            if not re.search(r"(?<![\w-])" + re.escape(f) + r"(?![\w-])", page_text)]


def _zctr_topics(overview):
    """(command, subcommand or None) of each synopsis line of `zctr --help`,
    e.g. "  containers start ID BUNDLE ..." -> ("containers", "start")."""
    topics = []
    in_commands = False
    for line in overview.splitlines():
        if line.startswith("Commands"):
            in_commands = True
            continue
        if in_commands and not line.strip():
            break
        m = re.match(r"^  ([a-z]+)(?: ([a-z]+)\b)?", line) if in_commands else None
        if m:
            topics.append((m.group(1), m.group(2)))
    return topics


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_help_flag_is_in_the_page(pages, program):
    binary = str(BUILD / program)
    texts = {"--help": _help([binary])}
    if program == "zctr":
        topics = _zctr_topics(texts["--help"])
        assert len(topics) >= 10, f"no command list found in zctr --help:\n{texts['--help']}"
        for cmd, sub in topics:
            argv = [binary, cmd] + ([sub] if sub else [])
            texts[" ".join(argv[1:]) + " --help"] = _help(argv)
    page = PROGRAMS[program]
    missing = {}
    for where, text in texts.items():
        flags = _flags(text)
        assert flags, f"no flag found in {program} {where}"
        lost = _missing(flags, pages[page])
        if lost:
            missing[where] = lost
    assert not missing, f"flags of {program} missing from {page}: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_without_warnings(pages, page):
    # -ww: every warning groff has; -Tascii: a terminal's 80 columns, where
    # tables or long words that cannot be set would warn
    res = subprocess.run(["groff", "-t", "-ww", "-z", "-man", "-Tascii", str(MAN / page)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stderr == "", f"groff on {page}:\n{res.stderr}"
    if shutil.which("lexgrog"):  # man-db's reader of NAME, for whatis and apropos
        res = subprocess.run(["lexgrog", str(MAN / page)], capture_output=True, text=True,
                             timeout=30)
        name = page.rsplit(".", 1)[0]
        assert res.returncode == 0 and f'"{name} - ' in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("page", PAGES)
def test_page_has_its_sections(pages, page):
    text = pages[page]
    headings = set(re.findall(r"^([A-Z][A-Z0-9 .-]*[A-Z])$", text, re.M))
    wanted = ("NAME", "DESCRIPTION", "SEE ALSO") if page == "zcd-protocol.7" else SECTIONS
    assert set(wanted) <= headings, f"{page} lacks {sorted(set(wanted) - headings)}"
    name = page.rsplit(".", 1)[0]
    assert re.search(r"^NAME\n\s+" + re.escape(name) + r" - \S", text, re.M), text[:300]


def test_cross_references_name_our_pages(pages):
    """zcd(8), zctr(1), ... as written in any page: a page we build."""
    ours = {p.rsplit(".", 1)[0] + "(" + p.rsplit(".", 1)[1] + ")" for p in PAGES}
    for page, text in pages.items():
        refs = set(re.findall(r"\b(zc(?:d|tr)[a-z-]*\(\d\))", text))
        assert refs <= ours, f"{page} refers to {sorted(refs - ours)}"

"""README and docs/ are executable documentation: every ```bash and ```python block of README.md and
docs/*.md runs here, or says why not on the line just above its fence (`<!-- not run by tests/test_docs.py:
REASON -->`), and README's set-up commands are CI's.

The commands run on a small random checkpoint (12 layers of 12 heads, so the examples' layer 5 exists) with a
trained vocabulary, found where README says `gpt2` is looked for offline: `$MINIGPT_GEOM_WEIGHTS/gpt2/`; the
corpus `texts/` is two small files. Each page's Python blocks run in order in one fresh interpreter."""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import needs
from launch import child_env

from minigpt_geom.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOUR = ROOT / "docs" / "tour.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXEMPT = re.compile(r"<!-- not run by tests/test_docs\.py: (.+?) -->\n$")
DOCS_SHAPE = dict(n_layer=12, n_head=12, n_embd=96, n_positions=128)
CORPUS = "texts"  # the folder the docs' corpus examples read
TOUR_STEPS = 2  # the tour's training budget here: every step runs, the model learns nothing worth looking at
TOUR_FIGURES = ["1_reach.png", "2_sphere.png", "3_attention.png", "4_residual.png", "5_trajectory.png", "6_lens.png",
                "7_drift.png", "8_patching.png", "8_rotation.png"]
NO_PLOT = "needs matplotlib (pip install -e .[plot])"


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page: its language, its body, and why it is not run (None: it is)."""

    page: Path
    language: str
    body: str
    exempt: str | None


def blocks(page: Path, language: str | None = None) -> list[Block]:
    """The fenced code blocks of `page` (of one language), in order."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"(?ms)^```(\w+)\n(.*?)^```$", text):
        reason = EXEMPT.search(text, 0, match.start())
        exempt = reason[1] if reason and reason.end() == match.start() else None
        found.append(Block(page, match[1], match[2], exempt))
    return [b for b in found if language is None or b.language == language]


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def command_lines() -> list[tuple[str, str]]:
    """(page, line) for every line of the pages' bash blocks that are run, README first."""
    return [(name(b.page), line.strip()) for page in PAGES for b in blocks(page, "bash") if b.exempt is None
            for line in b.body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_block_runs_or_says_why_not():
    """A bash line that is not `minigpt-geom …` cannot run here: its block must carry a reason, as must any
    block in a language this file does not run."""
    for page in PAGES:
        for block in blocks(page):
            if block.exempt is not None:
                assert block.exempt.strip(), f"{name(page)}: an exemption without a reason"
            elif block.language == "bash":
                for line in block.body.splitlines():
                    assert not line.strip() or line.lstrip().startswith(("#", "minigpt-geom ")), \
                        f"{name(page)}: `{line}` is not a minigpt-geom command; mark its block as not run, with why"
            else:
                assert block.language == "python", f"{name(page)}: a ```{block.language} block is never run"


def test_ci_runs_the_readme_setup_commands():
    first_block = blocks(README, "bash")[0]
    commands = [line for line in first_block.body.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands  # install, then test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for command in commands:
        assert command in ci, f"{command!r} is in README but .ci/run does not run it"
    readme = README.read_text(encoding="utf-8")
    assert readme.index(first_block.body) < readme.index("## The main job")  # set-up first, then the main job
    assert command_lines()[0] == ("README.md", 'minigpt-geom trajectory "To kill two birds with one stone"')


def test_every_link_leads_to_a_file():
    """Relative links of README and docs/ (pictures included) name files of the repository."""
    for page in PAGES:
        prose = re.sub(r"(?ms)^```.*?^```$|`[^`\n]*`", "", page.read_text(encoding="utf-8"))  # code is not a link
        for target in re.findall(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"", prose):
            target = next(t for t in target if t)
            if re.match(r"[a-z]+://|#", target):
                continue
            assert (page.parent / target.split("#")[0]).exists(), f"{name(page)} links to {target}, which is missing"


def test_readme_stays_a_short_path():
    """README is the learner's path; the reference lives in docs/, and measured figures in bench/NOTES.md."""
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert not re.search(r"\d+ (tests|passed)|tok/s|MB/s|\d\.\d+ s\b", readme), "a measured figure in README"


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory) -> Path:
    """A working folder with the drop-in checkpoint under $MINIGPT_GEOM_WEIGHTS/gpt2/ and the docs' corpus."""
    from bpe_files import SAMPLE, write_vocab
    from helpers import write_random_checkpoint

    root = tmp_path_factory.mktemp("docs")
    gpt2 = root / "drop_in" / "gpt2"
    vocab_size = write_vocab(gpt2, 200)
    write_random_checkpoint(gpt2, seed=5, vocab_size=vocab_size, **DOCS_SHAPE)
    (root / "work" / CORPUS / "more").mkdir(parents=True)
    (root / "work" / CORPUS / "a.txt").write_text(SAMPLE, encoding="utf-8")
    (root / "work" / CORPUS / "more" / "b.txt").write_text(SAMPLE[::-1], encoding="utf-8")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("page, line", command_lines(), ids=[f"{p}: {line}" for p, line in command_lines()])
def test_doc_command_runs(docs_world, monkeypatch, capsys, page, line):
    """In order, in one folder: the training examples' models are the later examples' weights."""
    monkeypatch.setenv("MINIGPT_GEOM_WEIGHTS", str(docs_world / "drop_in"))
    monkeypatch.chdir(docs_world / "work")
    argv = shlex.split(line)[1:]
    code = main(argv)
    out, err = capsys.readouterr()  # read once: a second read would find stdout already taken
    if code == 2 and "minigpt-geom[plot]" in err and importlib.util.find_spec("matplotlib") is None:
        pytest.skip(NO_PLOT)
    assert code == 0, err
    for written in re.findall(r"^wrote (\S+)", out, re.M):  # everything it says it wrote is there
        assert Path(written).stat().st_size > 0
    if argv[0] == "train":  # the training example visibly learns: the held-out loss falls by over a nat
        with open(argv[argv.index("-o") + 1] + "/log.csv", newline="") as f:
            val = [float(row["val_loss"]) for row in csv.DictReader(f) if row["val_loss"]]
        assert len(val) >= 2 and val[-1] < val[0] - 1.0, val


@pytest.mark.subprocess
@pytest.mark.parametrize("page", [name(p) for p in PAGES if p != TOUR and any(
    b.exempt is None for b in blocks(p, "python"))])
def test_doc_python_blocks_run(docs_world, page):
    """A page's Python blocks, in order, in one fresh interpreter (they build on each other, as in a session).
    The tour's run in the test below, on the model it trains."""
    env = child_env(MINIGPT_GEOM_WEIGHTS=str(docs_world / "drop_in"), HF_HUB_OFFLINE="1")
    work = docs_world / "python" / page.replace("/", "_")
    work.mkdir(parents=True)
    code = "\n".join(b.body for b in blocks(ROOT / page, "python") if b.exempt is None)
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr


def test_readme_command_table_matches_the_parsers():
    """Each row of README's command table names a real command and only options that command has."""
    readme = README.read_text(encoding="utf-8")
    commands = readme[readme.index("## Commands"):]
    commands = commands[:commands.index("\n## ")]
    rows = re.findall(r"^\| `([\w-]+)([^`]*)` \|", commands, re.M)
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert {command for command, _ in rows} == set(subcommands)
    for command, synopsis in rows:
        options = set(subcommands[command]._option_string_actions)
        for option in re.findall(r"(?<!\w)-{1,2}[a-z][\w-]*", synopsis):
            assert option in options, f"README shows `{command} {option}`, which {command} --help does not list"


@pytest.mark.slow
def test_gallery_script_runs_on_a_tiny_budget(tmp_path):
    """docs/make_gallery.py --tiny: every step of the gallery README links to, and every picture it names."""
    needs("matplotlib"), needs("tokenizers")
    env = child_env(HF_HUB_OFFLINE="1")
    committed = {path: path.read_bytes() for path in [ROOT / "docs" / "gallery.md",
                                                      *(ROOT / "docs" / "gallery").rglob("*.png")]}
    hand = "## compare: five norm variants\n\nhand-written, kept\n"
    (tmp_path / "gallery.md").write_text(f"intro\n{GALLERY_BEGIN}\nold figures\n{GALLERY_END}\n\n{hand}")
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "make_gallery.py"), "--tiny", "--out", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "gallery.md").read_text(encoding="utf-8")
    assert page.startswith(f"intro\n{GALLERY_BEGIN}\n# Gallery") and page.endswith(f"{GALLERY_END}\n\n{hand}")
    assert "old figures" not in page
    assert {path: path.read_bytes() for path in committed} == committed  # the committed gallery untouched
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert len(pictures) >= 10  # every figure (the report's screenshot only where Chromium is installed)
    for picture in pictures:
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    assert not (tmp_path / "gallery-work").exists()  # the corpus, tokenizer and checkpoint are removed
    readme = README.read_text(encoding="utf-8")
    assert "](docs/gallery.md)" in readme  # README's first screen links to the gallery it makes
    assert readme.index("docs/gallery.md") < readme.index("## Set up")


def gallery_script():
    """docs/make_gallery.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_gallery", ROOT / "docs" / "make_gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GALLERY_BEGIN = "<!-- generated by docs/make_gallery.py: from here -->"
GALLERY_END = "<!-- generated until here -->"


def test_the_gallery_keeps_hand_written_text_and_writes_no_docs_unless_told(tmp_path):
    gallery = gallery_script()
    assert (gallery.BEGIN, gallery.END) == (GALLERY_BEGIN, GALLERY_END)
    page = tmp_path / "gallery.md"
    page.write_text(f"top\n{GALLERY_BEGIN}\nold\n{GALLERY_END}\n## five norm variants\nby hand\n")
    assert gallery.with_hand_written_text(page, "new") == \
        f"top\n{GALLERY_BEGIN}\nnew\n{GALLERY_END}\n## five norm variants\nby hand\n"
    page.write_text("## five norm variants\nby hand, no markers\n")
    with pytest.raises(SystemExit, match="no .* markers"):
        gallery.with_hand_written_text(page, "new")
    committed = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    assert GALLERY_BEGIN in committed and "## compare: five norm variants" in committed.split(GALLERY_END)[1]


@pytest.mark.subprocess
def test_the_tour_runs_and_draws_every_figure(tmp_path):
    """docs/tour.md, linked from README: its Python blocks in order in a fresh interpreter, on the small model it
    trains itself (TOUR_STEPS steps); each step's figure is written to the folder the tour names."""
    needs("matplotlib"), needs("tokenizers")
    assert "docs/tour.md" in README.read_text(encoding="utf-8")
    env = child_env(TOUR_STEPS=str(TOUR_STEPS), HF_HUB_OFFLINE="1")
    env.pop("TOUR_CHECKPOINT", None)
    code = "\n".join(b.body for b in blocks(TOUR, "python"))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "reference = fused to" in result.stdout and f"trained {TOUR_STEPS} steps" in result.stdout
    for figure in TOUR_FIGURES:
        assert (tmp_path / "tour" / figure).stat().st_size > 0, figure


@pytest.mark.subprocess
def test_the_training_example_says_what_texts_is_and_how_to_make_it(tmp_path):
    """docs/training.md's corpus: a block that writes texts/ from what every Python has, run here as bash runs it,
    then the training example reads that folder; the losses bench/NOTES.md quotes for it start near a uniform
    guess, ln 50257."""
    page = ROOT / "docs" / "training.md"
    [writer] = [b for b in blocks(page, "bash") if "texts/" in b.body and "minigpt-geom" not in b.body]
    script = writer.body.replace("python ", f"{shlex.quote(sys.executable)} ")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "texts").glob("*.txt"))
    assert len(files) >= 3 and all(f.stat().st_size > 1000 for f in files)
    assert "Help on" in files[0].read_text(encoding="utf-8")[:200]  # pydoc's plain text, no pager escapes
    text = " ".join(page.read_text(encoding="utf-8").split())
    assert "minigpt-geom train texts/ -o tiny-trained" in text
    notes = " ".join((ROOT / "bench" / "NOTES.md").read_text(encoding="utf-8").split())
    notes = notes[notes.index("## docs/training.md's example run"):]
    assert "minigpt-geom train texts/ -o tiny-trained" in notes
    first = float(re.search(r"held-out loss fell from ([\d.]+) nats", notes)[1])
    assert abs(first - math.log(50257)) < 0.5  # an untrained model's loss is a uniform guess's, give or take

#!/usr/bin/python3
"""make-corpus.py OUT_DIR: the default training corpus, built from Debian packages (docs/data.md).

Writes plain UTF-8 text files, one document per file, grouped by kind:
  english/kjv/NN-Book.txt          King James Bible (bible-kjv), one book per file, a paragraph per chapter
  english/fortunes/DB-NN.txt       fortune databases (fortunes, fortunes-min), <= 64 KB per file
  chinese/fortunes/DB-NN.txt       Chinese fortunes, Tang and Song poems (fortunes-zh), <= 64 KB per file
  chinese/man/SECTION/PAGE.txt     Chinese man pages (manpages-zh) rendered with groff -Tutf8
  code/python/PATH.py              the Python standard library of /usr/bin/python3 (tests excluded)
plus MANIFEST.tsv (kind, path, bytes) and a per-kind summary on stdout. Deterministic: sorted walks, no
timestamps; the same package versions give byte-identical output. Cleaning: ANSI escapes and other control
characters removed, CRLF -> LF, trailing spaces stripped, runs of blank lines collapsed to one, invalid
UTF-8 replaced by U+FFFD. Prepare it with `dsv3 data prepare --doc-sep file --input OUT_DIR ...`.
Needs: bible-kjv fortunes fortunes-min fortunes-zh manpages-zh fortune-mod groff-base (scripts/install-deps.sh).
"""
import gzip
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

FORTUNE_DIR = "/usr/share/games/fortunes"
CHINESE_FORTUNES = ("chinese", "song100", "tang300")
MAN_ZH = "/usr/share/man/zh_CN"
CHUNK_BYTES = 64 * 1024
KJV_BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth", "1 Samuel",
    "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job",
    "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah", "Jeremiah", "Lamentations", "Ezekiel",
    "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai",
    "Zechariah", "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians",
    "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James", "1 Peter", "2 Peter",
    "1 John", "2 John", "3 John", "Jude", "Revelation",
]
PY_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MULTISPACE_RE = re.compile(r"(?<=\S) {2,}")


def clean(text, squeeze_spaces=False):
    """Control characters out, LF line ends, no trailing spaces, at most one blank line in a row."""
    text = ANSI_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if squeeze_spaces:
        text = text.replace("\t", "    ")
    text = CTRL_RE.sub("", text)  # keeps \t and \n
    lines = [line.rstrip() for line in text.split("\n")]
    if squeeze_spaces:
        lines = [MULTISPACE_RE.sub(" ", line) for line in lines]
    out, blank = [], True
    for line in lines:
        if not line:
            if not blank:
                out.append("")
            blank = True
        else:
            out.append(line)
            blank = False
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


class Writer:
    def __init__(self, root):
        self.root = root
        self.manifest = []

    def write(self, kind, rel, text):
        if not text.strip():
            return
        path = os.path.join(self.root, kind, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = text.encode("utf-8")
        with open(path, "wb") as f:
            f.write(data)
        self.manifest.append((kind, os.path.join(kind, rel), len(data)))


def run(cmd, stdin=None):
    return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout


def need(path, package):
    if not os.path.exists(path):
        sys.exit(f"make-corpus: {path} not found: install the Debian package {package} (scripts/install-deps.sh)")


def kjv(w):
    need("/usr/bin/bible", "bible-kjv")
    raw = run(["/usr/bin/bible", "-f", "gen1:1-rev22:21"], stdin=b"").decode("utf-8", "replace")
    verse_re = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")
    books = []  # [(abbrev, {chapter: [verses]})]
    for line in raw.splitlines():
        m = verse_re.match(line)
        if not m:
            continue
        abbrev, chapter, text = m.group(1), int(m.group(2)), m.group(4).strip()
        if not books or books[-1][0] != abbrev:
            books.append((abbrev, {}))
        books[-1][1].setdefault(chapter, []).append(text)
    if len(books) != len(KJV_BOOKS):
        sys.exit(f"make-corpus: expected {len(KJV_BOOKS)} books from `bible`, got {len(books)}")
    for i, ((_, chapters), name) in enumerate(zip(books, KJV_BOOKS)):
        parts = [f"The Book of {name}" if name not in ("Psalms", "Proverbs") else name]
        for ch in sorted(chapters):
            parts.append(f"Chapter {ch}")
            parts.append(" ".join(chapters[ch]))
        fname = "%02d-%s.txt" % (i + 1, name.replace(" ", "_"))
        w.write("english", os.path.join("kjv", fname), clean("\n\n".join(parts)))


def fortune_db(path):
    """The fortunes of one database file, cleaned, in file order."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    text = ANSI_RE.sub("", text)
    items = re.split(r"^%\s*$", text, flags=re.M)
    return [c for c in (clean(item).strip("\n") for item in items) if c]


def write_chunked(w, kind, prefix, items):
    chunk, size, n = [], 0, 0
    for item in items + [None]:
        if item is None or (chunk and size + len(item.encode()) > CHUNK_BYTES):
            if chunk:
                w.write(kind, "%s-%02d.txt" % (prefix, n), "\n\n".join(chunk) + "\n")
                n += 1
            chunk, size = [], 0
        if item is not None:
            chunk.append(item)
            size += len(item.encode()) + 2


def fortunes(w):
    need(FORTUNE_DIR, "fortunes")
    for name in sorted(os.listdir(FORTUNE_DIR)):
        path = os.path.join(FORTUNE_DIR, name)
        if "." in name or os.path.islink(path) or not os.path.isfile(path):
            continue  # .dat indexes, .u8 links, the off/ directory
        kind = "chinese" if name in CHINESE_FORTUNES else "english"
        write_chunked(w, kind, os.path.join("fortunes", name), fortune_db(path))
    for name in CHINESE_FORTUNES:
        need(os.path.join(FORTUNE_DIR, name), "fortunes-zh")


def render_man(path):
    with open(path, "rb") as f:
        roff = f.read()
    if path.endswith(".gz"):
        roff = gzip.decompress(roff)
    if roff.startswith(b".so "):
        return ""  # a link to another page, rendered there
    pre = run(["preconv", "-e", "UTF-8"], stdin=roff)
    out = run(["groff", "-mandoc", "-Tutf8", "-rLL=78n", "-rHY=0", "-P-cbou"], stdin=pre)
    return clean(out.decode("utf-8", "replace"), squeeze_spaces=True)


def man_zh(w):
    need(MAN_ZH, "manpages-zh")
    need("/usr/bin/groff", "groff-base")
    pages = []
    for dirpath, dirnames, filenames in os.walk(MAN_ZH):
        dirnames.sort()
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            if not os.path.islink(p):
                pages.append(p)
    pages.sort()
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(render_man, pages))
    for p, text in zip(pages, texts):
        rel = os.path.relpath(p, MAN_ZH)
        rel = rel[:-3] if rel.endswith(".gz") else rel
        w.write("chinese", os.path.join("man", rel + ".txt"), text)


def python_stdlib(w):
    stdlib = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in PY_SKIP_DIRS and not d.startswith("."))
        if os.path.basename(dirpath).startswith("test_"):
            continue
        for fn in sorted(filenames):
            if fn.endswith(".py") and not fn.startswith("test_"):
                files.append(os.path.join(dirpath, fn))
    files.sort()
    for p in files:
        with open(p, "rb") as f:
            data = f.read()
        if len(data) > 1 << 20:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        text = text.replace("\r\n", "\n")
        text = "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n") + "\n"
        w.write("code", os.path.join("python", os.path.relpath(p, stdlib)), text)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make-corpus.py OUT_DIR")
    root = sys.argv[1]
    if os.path.exists(root) and os.listdir(root):
        if not os.path.exists(os.path.join(root, "MANIFEST.tsv")):
            sys.exit(f"make-corpus: {root} is not empty and holds no MANIFEST.tsv; refusing to overwrite it")
        shutil.rmtree(root)
    os.makedirs(root, exist_ok=True)
    w = Writer(root)
    kjv(w)
    fortunes(w)
    man_zh(w)
    python_stdlib(w)
    w.manifest.sort(key=lambda r: r[1])
    with open(os.path.join(root, "MANIFEST.tsv"), "w", encoding="utf-8") as f:
        f.write("kind\tpath\tbytes\n")
        for kind, path, n in w.manifest:
            f.write(f"{kind}\t{path}\t{n}\n")
    total = 0
    for kind in ("english", "chinese", "code"):
        rows = [r for r in w.manifest if r[0] == kind]
        n = sum(r[2] for r in rows)
        total += n
        print(f"{kind:8s} {len(rows):5d} files {n / 1e6:7.2f} MB")
    print(f"total    {len(w.manifest):5d} files {total / 1e6:7.2f} MB -> {root}")


if __name__ == "__main__":
    main()

"""Code blocks of README.md for CI, so that what CI runs is what the README says.

    python .ci/readme.py block NAME        print the block marked <!-- ci: NAME -->
    python .ci/readme.py snippets DIR URL  write every python block not marked <!-- ci: skip -->
                                           to DIR/snippet_NN.py, aimed at the emulator at URL

A marker is an HTML comment (invisible on GitHub) on the line just above the opening fence.
Snippets say http://127.0.0.1:8765 (`reactive-tasks emulate`'s default); CI's emulator listens
on a free port, so that address is replaced with URL.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(
    r"(?:<!-- ci: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```", re.M | re.S
)
DEFAULT_URL = "http://127.0.0.1:8765"


def blocks() -> list[tuple[str | None, str, str]]:
    """(marker or None, language, text) of every fenced block, in order."""
    return [(m["mark"], m["lang"], m["body"]) for m in BLOCK.finditer(README.read_text())]


def main(argv: list[str]) -> int:
    if argv[:1] == ["block"] and len(argv) == 2:
        found = [body for mark, _, body in blocks() if mark == argv[1]]
        if len(found) != 1:
            print(f"README.md has {len(found)} blocks marked {argv[1]!r}", file=sys.stderr)
            return 1
        sys.stdout.write(found[0])
        return 0
    if argv[:1] == ["snippets"] and len(argv) == 3:
        out, url = Path(argv[1]), argv[2].rstrip("/")
        out.mkdir(parents=True, exist_ok=True)
        count = 0
        for mark, lang, body in blocks():
            if lang == "python" and not (mark or "").startswith("skip"):
                count += 1
                (out / f"snippet_{count:02d}.py").write_text(body.replace(DEFAULT_URL, url))
        print(f"{count} python snippets from README.md")
        return 0 if count else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

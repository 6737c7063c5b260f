"""How long xgrammar takes to compile each bundled reply format's regex for the demo model.

vLLM compiles a request's regex in EngineCore before the request is scheduled, and fails the
request (finish_reason "error", empty text) when that takes longer than
`VLLM_REGEX_COMPILATION_TIMEOUT_S` (5 s; `v1/structured_output/utils.py:
compile_regex_with_timeout`). A counted repetition such as `[^\\n]{0,299}` costs about 2 s here,
so `seftgen/formats.py` writes free text unbounded. This prints each bundled format's compile
time with the same compiler settings as vLLM's xgrammar backend (`backend_xgrammar.py`), beside
the same format with counted bounds of 300 characters a line and 2000 a text (about what the
templates' `max_chars` were up to 2026-12-07), for comparison.

    python bench/format_compile.py [--model PATH] [--no-compare]
"""

from __future__ import annotations

import argparse
import re
import time

from seftgen.models import demo_model_dir
from seftgen.templates import load_template, template_names

# About the bounds the bundled templates carried up to 2026-12-07 (`max_chars`), for the comparison.
OLD_BOUND = {"line": 300, "text": 2000}


def bounded(regex: str) -> str:
    """The regex with the counted repetitions of the old `max_chars` bounds."""
    regex = regex.replace("[^\\n]*", f"[^\\n]{{0,{OLD_BOUND['line'] - 1}}}")
    return regex.replace("[\\s\\S]*", f"[\\s\\S]{{0,{OLD_BOUND['text'] - 1}}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a local model folder (default: the demo model)")
    parser.add_argument("--no-compare", action="store_true", help="skip the bounded forms (seconds each)")
    args = parser.parse_args()
    import xgrammar as xgr
    from transformers import AutoConfig, AutoTokenizer

    model = args.model or str(demo_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(model)
    vocab = AutoConfig.from_pretrained(model).vocab_size
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)

    def seconds(regex: str) -> float:
        compiler = xgr.GrammarCompiler(info, max_threads=8, cache_enabled=True)  # as vLLM's backend
        began = time.monotonic()
        compiler.compile_regex(regex)
        return time.monotonic() - began

    print("| template | compile s | with counted bounds s | counted repetitions then |")
    print("| --- | --- | --- | --- |")
    for name in template_names():
        fmt = load_template(name).output
        if fmt is None:
            continue
        regex = fmt.regex()
        old = bounded(regex)
        counted = len(re.findall(r"\]\{\d", old))
        then = "-" if args.no_compare else f"{seconds(old):.3f}"
        print(f"| {name} | {seconds(regex):.3f} | {then} | {counted} |")


if __name__ == "__main__":
    main()

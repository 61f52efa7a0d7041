"""Generation parameters as WebUI-style infotext (prompt, negative prompt, `Key: value, ...`) and back."""
from __future__ import annotations

import json
import re
from typing import Dict, Tuple

_PAIR = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def quote(value: object) -> str:
    """Quote a value the way the WebUI does: JSON string when it holds a comma, colon, quote or newline."""
    text = str(value)
    if any(c in text for c in ',:"\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def build_infotext(prompt: str, negative: str, params: Dict[str, object]) -> str:
    """`prompt\\nNegative prompt: ...\\nKey: value, Key: value` (None values are left out)."""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> Tuple[str, str, Dict[str, str]]:
    """(prompt, negative prompt, parameters) from infotext; the last line holds the parameters."""
    lines = text.strip().split("\n")
    params: Dict[str, str] = {}
    if len(lines) > 1 and not lines[-1].startswith("Negative prompt:"):
        found = _PAIR.findall(lines[-1])
        if found:
            params = {k.strip(): unquote(v) for k, v in found}
            lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt).strip(), "\n".join(negative).strip(), params

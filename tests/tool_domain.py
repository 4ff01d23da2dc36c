"""The arithmetic example domain with tools that a random tiny model calls often: every `e` it samples and every
newline it writes greedily is answered with `[42]`, so that the tests see many tool calls pass through vLLM and TRL."""

from selfplay_arithmetic import Arithmetic

from selfplay.tools import Tool

ANSWER = "[42]"
FREQUENT = "tool_domain:FrequentToolArithmetic"


class FrequentToolArithmetic(Arithmetic):
    name = "arithmetic-with-a-frequent-tool"

    def tools(self, config):
        return [Tool(open="", close=close, run=lambda call: ANSWER) for close in ("e", "\n")]

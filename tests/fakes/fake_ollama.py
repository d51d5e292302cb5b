"""The fake Ollama lives in the package (the demo uses it too); tests import it from here."""

from aitbc_miner.devnet.ollama import *  # noqa: F401,F403
from aitbc_miner.devnet.ollama import (  # noqa: F401
    Behavior,
    FakeLLMServer,
    FakeOllama,
    StreamRecord,
    count_prompt_tokens,
    ollama_key,
    token_text,
)

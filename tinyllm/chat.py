"""A conversation with a model: the chat template, and the turns kept in the KV cache.

The template, plain text that any byte-level tokenizer encodes:

    <|system|>
    You are a helpful assistant.
    <|user|>
    What is a haiku?
    <|assistant|>
    A short poem.
    <|user|>
    ...

A turn appends "<|user|>\\n{message}\\n<|assistant|>\\n" and the model's reply,
which ends where the model starts a new marker ("\\n<|", not printed), at its
end-of-text token, or after max_new_tokens; the reply is kept followed by "\\n".
The KV cache holds the conversation between turns: a turn prefills only the
tokens the cache does not hold yet (its own message, and whatever the re-encoded
reply does not share with the sampled ids), because Chat remembers which ids the
cache holds and keeps the longest common prefix of those and the new
conversation. When a turn would not fit the context (its message plus room for
the reply), the oldest turns are dropped (`dropped` counts them) and the cache
is refilled from the system prompt on.

A tokenizer that holds the markers as special tokens (a model instruction-tuned
by `finetune sft`, whose template this is: tinyllm/finetune/sft.py) gets them
as their single ids, and a reply then ends at "<|end|>", which is also what
is kept after it in place of "\n".

Not here: the REPL (tinyllm/cli/chat.py) or decoding (generate.py).
"""
import numpy as np

from tinyllm.generate import KVCache, Timing, stream_text
from tinyllm.sampling import Sampling

SYSTEM, USER, ASSISTANT, END = "<|system|>\n{}\n", "<|user|>\n{}\n", "<|assistant|>\n", "\n"
STOPS = ("\n<|",)
MARKERS, SFT_END = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), "<|end|>"


def common_prefix(a, b):
    """The length of the longest common prefix of two id lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Chat:
    def __init__(self, model, tokenizer, settings=None, max_new_tokens=256, system="", seed=None):
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings or Sampling()
        self.max_new_tokens = max_new_tokens
        self.rng = np.random.default_rng(seed)
        self.cache = KVCache(model.config)
        self.cached = []          # the ids whose keys and values the cache holds, in order
        self.turns = []           # per turn: the ids of its message and of its reply
        self.dropped = 0          # turns dropped to fit the context so far
        self.timing = None        # the last turn's Timing
        # the template's markers that the tokenizer holds as special tokens (fine-tuned models)
        self.markers = set(getattr(tokenizer, "special_tokens", None) or ()) & set(MARKERS)
        self.end = SFT_END if SFT_END in self.markers else END
        self.stops = (*STOPS, SFT_END) if SFT_END in self.markers else STOPS
        self.set_system(system)

    def encode(self, text):
        """Ids of template text: the markers the tokenizer holds are their special ids."""
        if self.markers:
            return self.tokenizer.encode(text, allowed_special=self.markers)
        return self.tokenizer.encode(text)

    def set_system(self, text):
        """The system prompt (empty: none); the turns stay, the cache refills from the change."""
        self.system = self.encode(SYSTEM.format(text)) if text else []

    def reset(self):
        """Forget every turn and empty the cache; the system prompt stays."""
        self.turns, self.cached = [], []
        self.cache.reset()

    def context(self):
        return self.system + [i for turn in self.turns for i in turn]

    def _fit(self, message_ids):
        """Drop the oldest turns until the message and room for a reply fit; -> the reply budget."""
        block = self.model.config.block_size
        budget = min(self.max_new_tokens, max(1, block // 2))
        while self.turns and len(self.context()) + len(message_ids) + budget > block:
            self.turns.pop(0)
            self.dropped += 1
        room = block - len(self.context()) - len(message_ids) - len(self.encode(self.end))
        if room < 1:
            raise ValueError(f"the message takes {len(message_ids)} tokens and the system prompt "
                             f"{len(self.system)}, but the context holds {block}: shorten them")
        return min(self.max_new_tokens, room)

    def say(self, message):
        """Yield the reply to message as printable pieces of text; the turn is kept even when the
        caller stops early (Ctrl-C), with the reply so far."""
        message_ids = self.encode(USER.format(message) + ASSISTANT)
        budget = self._fit(message_ids)
        idx = self.context() + message_ids
        # keep what the cache shares with the conversation; at least one id is fed
        self.cache.length = min(self.cache.length, common_prefix(self.cached, idx), len(idx) - 1)
        self.timing, generated, reply = Timing(), [], []
        try:
            for ids, pieces in stream_text(self.model, self.tokenizer, np.array([idx]), budget,
                                           self.settings, self.rng, self.stops, self.cache, self.timing):
                if ids is not None:
                    generated.append(int(ids[0]))
                reply.append(pieces[0])
                if pieces[0]:
                    yield pieces[0]
        finally:
            self.cached = (idx + generated)[:self.cache.length]
            self.turns.append(message_ids + self._reply_ids(generated, "".join(reply)) +
                              self.encode(self.end))

    def _reply_ids(self, generated, reply):
        """The longest run of the sampled ids whose text is a start of the printed reply: the ids
        of the reply without those of a stop string (re-encoding the text would turn bytes that
        are not UTF-8 into U+FFFD's three)."""
        for n in range(len(generated), 0, -1):
            if reply.startswith(self.tokenizer.decode(generated[:n])):
                return generated[:n]
        return []

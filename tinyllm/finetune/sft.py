"""Instruction tuning data: the prompt template, its special tokens, and targets with the prompt masked.

Two JSONL shapes are read, one example per line:
    {"instruction": "...", "input": "...", "output": "..."}             Alpaca ("input" optional)
    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}   chat
An Alpaca line is the chat [user: instruction + "\\n\\n" + input, assistant: output].

The template (the special tokens are single ids, never text):
    <|system|>\\n{system}\\n            only when there is a system message
    <|user|>\\n{content}\\n
    <|assistant|>\\n{content}<|end|>    trained: the answer and its <|end|>
and so on for each turn. To generate, feed everything up to "<|assistant|>\\n"
(`prompt_ids`) and stop at <|end|>.

Targets: y[t] is the token after x[t], or -1 when that token is not
trained: with mask_prompt (the default) only assistant content and its
<|end|> are trained; without it every token after the first is. Sequences
longer than the context keep their first block_size + 1 tokens and are
counted. `add_special_tokens` gives the tokenizer the template's tokens and
the model a new embedding and lm_head row for each, the mean of the
existing rows. Not here: batching (data/examples.py). Read classify.py next.
"""
import dataclasses

import numpy as np

from tinyllm.data.examples import field, read_jsonl
from tinyllm.errors import DataError
from tinyllm.tensor import like, to_numpy
from tinyllm.tokenizer import Tokenizer

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
TEMPLATE_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


def add_special_tokens(model, tokenizer, tokens=TEMPLATE_TOKENS):
    """(tokenizer with the tokens, number added); the model grows one wte and lm_head row per token."""
    if not isinstance(tokenizer, Tokenizer):
        raise DataError(f"instruction tuning adds special tokens, which the {tokenizer.name!r} "
                        f"tokenizer cannot hold: pretrain the base with --tokenizer bpe")
    special = tokenizer.special_tokens
    new = [t for t in tokens if t not in special]
    if not new:
        return tokenizer, 0
    V = tokenizer.vocab_size
    special.update({t: V + k for k, t in enumerate(new)})
    if model.config.vocab_size != V:
        raise DataError(f"the base model has {model.config.vocab_size} token rows but its "
                        f"tokenizer {V} ids; the checkpoint is inconsistent")
    for table in (model.transformer.wte.weight, model.lm_head.weight):
        rows = to_numpy(table.data)                                        # (V, C)
        mean = np.repeat(rows.mean(axis=0, keepdims=True), len(new), axis=0)  # (new, C)
        table.data = like(table.data, np.concatenate([rows, mean]))        # (V + new, C)
    model.config = dataclasses.replace(model.config, vocab_size=V + len(new))
    return Tokenizer(tokenizer.mergeable_ranks(), tokenizer.pattern, special), len(new)


def read_instructions(path):
    """[(line number, messages)] of an Alpaca or chat JSONL file, every line checked."""
    return [(number, _messages(path, number, row)) for number, row in read_jsonl(path)]


def _messages(path, number, row):
    if "messages" in row:
        messages = field(path, number, row, "messages", list)
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise DataError(f"{path}:{number}: message {i} must be an object with a string "
                                f"'content', got {str(m)[:80]}")
            if m.get("role") not in ROLES:
                raise DataError(f"{path}:{number}: message {i} has the unknown role "
                                f"{m.get('role')!r}; roles are {', '.join(ROLES)}")
    else:
        instruction = field(path, number, row, "instruction")
        given = row.get("input") or ""
        if not isinstance(given, str):
            raise DataError(f"{path}:{number}: field 'input' must be a string")
        messages = [{"role": "user", "content": instruction + ("\n\n" + given if given else "")},
                    {"role": "assistant", "content": field(path, number, row, "output")}]
    answers = [m for m in messages if m["role"] == "assistant"]
    if not answers or any(not m["content"].strip() for m in answers):
        raise DataError(f"{path}:{number}: an empty answer: every example needs an assistant "
                        f"message (or 'output') with some text")
    return messages


def segments(messages):
    """[(text or special token, trained)] of the template, in order."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            out += [(ASSISTANT, False), ("\n", False), (m["content"], True), (END, True)]
        else:
            out += [(ROLES[m["role"]], False), ("\n" + m["content"] + "\n", False)]
    return out


def encode(messages, tokenizer):
    """(ids, trained) 1-D arrays of one chat in the template."""
    special = tokenizer.special_tokens
    ids, trained = [], []
    for piece, is_trained in segments(messages):
        # text is always plain text: a "<|user|>" typed by a user is not the token
        piece_ids = [special[piece]] if piece in special else tokenizer.encode(piece, "none")
        ids += piece_ids
        trained += [is_trained] * len(piece_ids)
    return np.array(ids, np.int64), np.array(trained, bool)


def prompt_ids(tokenizer, question, system=None):
    """The ids to generate an answer from: the template up to and including "<|assistant|>\\n"."""
    if END not in tokenizer.special_tokens:
        raise DataError("this model's tokenizer has no template tokens: it was not instruction-"
                        "tuned (`python -m tinyllm finetune sft`), so prompt it with plain text")
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": question}, {"role": "assistant", "content": "x"}]
    ids, trained = encode(messages, tokenizer)
    return ids[:int(np.argmax(trained))]


def examples(chats, tokenizer, block_size, mask_prompt=True):
    """(examples [(x, y)], number truncated) from [(line number, messages)]."""
    out, truncated = [], 0
    for _, messages in chats:
        ids, trained = encode(messages, tokenizer)
        if len(ids) > block_size + 1:
            ids, trained, truncated = ids[:block_size + 1], trained[:block_size + 1], truncated + 1
        if not mask_prompt:
            trained = np.ones_like(trained)
        x = ids[:-1]                                                       # (T,)
        y = np.where(trained[1:], ids[1:], -1)                             # (T,) next token or -1
        out.append((x, y))
    return out, truncated


def answer(model, tokenizer, question, max_new_tokens=64, **sampling):
    """The model's answer to a question put in the template: generated text up to <|end|>."""
    ids = prompt_ids(tokenizer, question)
    out = model.generate(ids[None, -model.config.block_size:], max_new_tokens, **sampling)[0, len(ids):]
    return answer_text(tokenizer, out)


def answer_text(tokenizer, ids):
    """Decode generated ids, stopping before the first <|end|>."""
    ids = list(ids)
    end = tokenizer.special_tokens[END]
    return tokenizer.decode(ids[:ids.index(end)] if end in ids else ids)

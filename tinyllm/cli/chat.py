"""`python -m tinyllm chat`: talk to a checkpoint in a REPL, the conversation kept in the KV cache.

    python -m tinyllm chat --ckpt out/ckpt.safetensors --system "You are terse."
    python -m tinyllm chat --ckpt out/ckpt.safetensors --adapter out-sft/   # a LoRA adapter on top

Type a message and Enter; the reply is streamed. Commands: /reset (forget the
conversation, empty the cache), /system TEXT (a new system prompt), /quit or
Ctrl-D (leave). Ctrl-C stops a reply in progress and stays in the chat. The
template and the cache handling are tinyllm/chat.py's; after each reply stderr
shows the turn's prefill (only the tokens the cache lacked) and decode rates.
This file only parses flags and runs the loop.
"""
import sys

from tinyllm import backends
from tinyllm.chat import Chat
from tinyllm.cli.generate import parser as generate_parser, settings_from, with_exclude
from tinyllm.errors import CheckpointError, TokenizerError
from tinyllm.finetune.run import load_for_inference
from tinyllm.terminal import shown

HELP = "commands: /reset, /system TEXT, /quit (or Ctrl-D); Ctrl-C stops a reply"


def parser():
    p = generate_parser("chat")
    p.description = "Chat with a trained checkpoint: " + HELP
    p.add_argument("--system", default="", help="system prompt (default: none)")
    p.set_defaults(max_new_tokens=256)
    return p


def turn(chat, line, escape="auto"):
    """Run one line of input (replies shown per --escape); False when the chat ends."""
    if line in ("/quit", "/exit"):
        return False
    if line == "/reset":
        chat.reset()
        print("(conversation reset)", file=sys.stderr)
    elif line.startswith("/system"):
        chat.set_system(line[len("/system"):].strip())
        print("(system prompt set)", file=sys.stderr)
    elif line.startswith("/"):
        print(f"unknown command {line.split()[0]}; {HELP}", file=sys.stderr)
    elif line.strip():
        dropped = chat.dropped
        try:
            for piece in chat.say(line):
                print(shown(piece, mode=escape), end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        print(flush=True)
        if chat.dropped > dropped and dropped == 0:
            print(f"(the conversation passed the context of {chat.model.config.block_size} "
                  f"tokens: dropping the oldest turns from now on)", file=sys.stderr)
        print(chat.timing.report(), file=sys.stderr)
    return True


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args)
        if args.backend:
            backends.set_backend(args.backend)
        if args.instruction:
            raise ValueError("--instruction is generate's: chat always puts the messages in its "
                             "template (tinyllm/chat.py), the fine-tuning one; leave the flag out")
        model, tokenizer, meta = load_for_inference(args.ckpt, args.adapter)
        chat = Chat(model.eval(), tokenizer, with_exclude(settings, tokenizer), args.max_new_tokens,
                    args.system, args.seed)
    except (CheckpointError, TokenizerError, ValueError, backends.BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.ckpt}: step {meta['step']}, {model.summary()}\n{HELP}", file=sys.stderr)
    while True:
        try:
            if sys.stdin.isatty():
                line = input("> ")
            else:
                line = sys.stdin.readline()
                if not line:
                    raise EOFError
                line = line.rstrip("\n")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        try:
            if not turn(chat, line, args.escape):
                return 0
        except (TokenizerError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)

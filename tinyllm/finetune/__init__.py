"""tinyllm.finetune: adapting a pretrained GPT to a task.

In reading order:
  sft.py       instruction data, the prompt template, its special tokens, the prompt mask
  classify.py  labelled data and the classification head
  lora.py      LoRALinear, merge/unmerge, adapters in peft's files
  model.py     which model a fine-tuned checkpoint holds
  run.py       a fine-tuning run from its settings, on the shared Trainer
The command line is tinyllm/cli/finetune.py; examples/finetune.py runs both kinds.
"""

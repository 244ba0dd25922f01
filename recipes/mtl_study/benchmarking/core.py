"""The context every benchmark section runs in (:class:`Benchmark`): arguments, device, tokenizer, the two
model builders (one multi-task model with K heads, one single-task model), and the list of figures."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from data_prep.synthetic_text import TextGenerator

from .figures import Figure

if TYPE_CHECKING:
    from .arguments import BenchmarkArguments

logger = logging.getLogger("benchmark")


class Benchmark:
    """What every section shares: arguments, device, tokenizer, model builders, and the figures collected."""

    def __init__(self, args: "BenchmarkArguments", device: torch.device, is_main_process: bool = True):
        from transformers import AutoTokenizer

        self.args = args
        self.device = device
        self.is_main_process = is_main_process
        self.tokenizer = AutoTokenizer.from_pretrained(args.backbone)
        self.figures: list[Figure] = []
        self.bf16 = args.bf16 and device.type == "cuda"
        if args.bf16 and not self.bf16:
            logger.warning("--bf16 ignored: it needs a CUDA device (the figures are fp32)")

    def log(self, message: str) -> None:
        """Progress, from the main process only (every process runs the distributed sections)."""
        if self.is_main_process:
            logger.info(message)

    def text_generator(self, seed_offset: int) -> TextGenerator:
        """Seeded synthetic text over the tokenizer's whole-word entries (one word is one token)."""
        return TextGenerator.from_tokenizer(self.tokenizer, self.args.seed + seed_offset)

    def multitask_model(self, tasks, **options):
        from modeling import MultiTaskModel

        torch.manual_seed(self.args.seed)
        model = MultiTaskModel.from_backbone(self.args.backbone, tasks, sharing="hard",
                                             backbone_kwargs={"attn_implementation": "sdpa"}, **options)
        return model.to(self.device).eval()

    def single_task_model(self, task):
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(self.args.seed)
        return (
            AutoModelForSequenceClassification.from_pretrained(
                self.args.backbone,
                num_labels=len(task["labels"]),
                problem_type=task["problem_type"],
                attn_implementation="sdpa",
            )
            .to(self.device)
            .eval()
        )

"""Everything between a product listing and a batch of token ids.

Items and readers (`load_items`), the course's curation, prompts, de-duplicated
deterministic splits, the completion-only collator, exports and a tokenizer probe.
"""
from data.collator import IGNORE_INDEX, CompletionCollator, pad_token_id
from data.curate import CurationConfig, curate, parse_price, scrub
from data.items import DataError, Item
from data.order import epoch_order, micro_batch_indices
from data.prompts import PREFIX, QUESTION, completion, full_train_text, test_prompt, to_example, train_prompt
from data.sources import LoadReport, load_items
from data.splits import Splits, balance, dedup, dedup_key, price_balanced_sample, sample, split_items

__all__ = [
    "CompletionCollator", "CurationConfig", "DataError", "IGNORE_INDEX", "Item", "LoadReport", "PREFIX", "QUESTION",
    "Splits", "balance", "completion", "curate", "dedup", "dedup_key", "epoch_order", "full_train_text", "load_items",
    "micro_batch_indices", "pad_token_id", "parse_price", "price_balanced_sample", "sample", "scrub", "split_items",
    "test_prompt", "to_example", "train_prompt",
]

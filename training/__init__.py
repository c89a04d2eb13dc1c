"""What train.py's loop uses and a reader may skip: the config and its parsing, the completion loss,
speed (CUDA graphs, compile), how processes share a step, optimizer and schedule, the batches of
each step, checkpoints, the run's folder and log, and validation. No command line lives here."""
from training.batches import StepBatches, examples_of, load_splits
from training.best import BestKeeper
from training.checkpoint import AdapterSaver, CheckpointError, pick_checkpoint, restore, save_checkpoint, verify
from training.config import Config, DataConfig, LogConfig, LoRASection, ModelConfig, TrainConfig, config_yaml, \
    lora_config_of
from training.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from training.loss import CompletionLossModel, StaticCompletionLoss, accumulate_gradients, completion_loss_sum
from training.optim import build_optimizer, build_scheduler, lr_lambda, reschedule, warmup_steps
from training.parallel import Wrapped, clip_gradients, load_adapter_values, make_accelerator, shard_while_loading, \
    wrap_for_processes
from training.parse import load_config, parse_args
from training.resolve import resolve
from training.rundir import claim_output_dir, truncate_metrics, write_run_files
from training.runlog import RunLog, StopFlag, peak_memory_mb
from training.speed import CudaGraphLoss, compile_decoder_layers
from training.validate import Validator

__all__ = [
    "accumulate_gradients", "AdapterSaver", "BestKeeper", "build_optimizer", "build_scheduler", "CheckpointError",
    "claim_output_dir", "clip_gradients", "compile_decoder_layers", "completion_loss_sum", "CompletionLossModel",
    "Config", "config_yaml", "ConfigError", "CudaGraphLoss", "DataConfig", "examples_of", "load_config",
    "load_adapter_values", "load_splits", "LogConfig", "lora_config_of", "LoRASection", "lr_lambda",
    "make_accelerator", "ModelConfig", "parse_args", "peak_memory_mb", "pick_checkpoint", "reschedule", "resolve",
    "restore", "RunLog", "save_checkpoint", "shard_while_loading", "StaticCompletionLoss", "StepBatches", "StopFlag",
    "TrainConfig", "TrainingDiverged", "TrainingInterrupted", "truncate_metrics", "Validator", "verify",
    "warmup_steps", "wrap_for_processes", "Wrapped", "write_run_files",
]

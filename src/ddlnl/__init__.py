"""ddlnl: dataset distillation as a label denoiser."""

__version__ = "0.1.0"

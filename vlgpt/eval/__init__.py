"""Evaluation utilities: text metrics (VQA accuracy, caption scores) and confidence intervals."""
